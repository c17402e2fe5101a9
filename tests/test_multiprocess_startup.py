"""Start-up under several processes (issue 12): two ranks started together by torchrun on an empty data folder
generate the built-in data once (a file lock; the other rank waits and reads it) and train with DDP on the CPU."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from physiotouch.utils.files import default_file_mode


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_generate_the_data_once(tmp_path):
    # A set large enough (12 objects x 3 sensors x 24 frames, seconds to write) that both ranks reach it together.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "--master_addr=127.0.0.1", "-m", "physiotouch.train", "trainer=ddp", "trainer.accelerator=cpu",
           "trainer.devices=2", "trainer.precision=32-true", f"paths.data_dir={tmp_path}/data",
           f"hydra.run.dir={tmp_path}/run", "data.synthetic.frames=24", "trainer.max_epochs=1", "optim.warmup_epochs=1",
           "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "data.batch_size=4",
           "trainer.enable_progress_bar=false"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert out.count("generating the built-in synthetic data set") == 1, out[-3000:]
    assert (tmp_path / "data" / "synthetic_tacquad" / "synthetic.json").is_file()
    leftovers = [p for p in (tmp_path / "data").glob(".synthetic_tacquad.*") if p.is_dir()]
    assert not leftovers  # no half-written copy left beside it (the empty .lock file stays, by design)
    mode = (tmp_path / "data" / "synthetic_tacquad").stat().st_mode & 0o777
    assert mode == default_file_mode(folder=True)  # the user's normal permissions, not mkdtemp's 0700
    assert (tmp_path / "run" / "summary.json").is_file()
