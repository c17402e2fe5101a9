"""Shared fixtures: a small synthetic TacQuad-layout data set and the real composed config, sized for a CPU."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# One torch thread per test process and per process a test starts: the suite runs on two workers (pyproject's
# addopts), and more threads than cores oversubscribe them (the brief measured 13x per epoch).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from physiotouch.data.synthetic import SynthConfig, generate  # noqa: E402
from physiotouch.hydra_setup import compose_config  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
SMALL = dict(num_objects=6, frames=10, width=32, height=24, seed=3)


@pytest.fixture(scope="session")
def small_data_master(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synth"
    generate(SynthConfig(out=str(root), **SMALL))
    return root


@pytest.fixture
def small_data(small_data_master, tmp_path) -> Path:
    """A private copy per test (tests may corrupt it)."""
    root = tmp_path / "synth"
    shutil.copytree(small_data_master, root)
    return root


def train_overrides(data_root: Path, out: Path, *extra: str) -> list[str]:
    """The real config, pointed at the small data set and a temporary output folder, tiny and fast."""
    return [f"data.root={data_root}", "data.synthetic=null", f"data.cache_dir={out}/cache", f"paths.output_dir={out}",
            f"paths.data_dir={out}/data", "data.batch_size=8", "data.val_batch_size=16",
            "data.split.val_fraction=0.2", "data.split.test_fraction=0.2", "data.split.exclude=[]",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "optim.warmup_epochs=1", *extra]


@pytest.fixture
def make_cfg():
    def make(data_root: Path, out: Path, *extra: str):
        return compose_config(train_overrides(data_root, out, *extra))

    return make


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A tiny model trained 3 epochs on a slightly longer synthetic set (shared by evaluation and release tests)."""
    from physiotouch.training.run import run_training

    base = tmp_path_factory.mktemp("trained")
    data = base / "data"
    generate(SynthConfig(out=str(data), num_objects=8, frames=16, width=32, height=24, seed=5))
    out = base / "run"
    # the objects this repository's releases tested are excluded, as the built-in config does: a release of this
    # run (the release tests, the hostile-input rows) is a first look at every one of its test objects
    cfg = compose_config(train_overrides(data, out, "trainer.max_epochs=3", "data.batch_size=16",
                                         "data.split.exclude=[cylinder,ring,ridged,sphere]"))
    run_training(cfg)
    return out


@pytest.fixture(autouse=True)
def own_repository_ledger(tmp_path, monkeypatch):
    """In-process tests release on the tests' own tiny data sets, whose objects share names with those this
    repository's releases tested: each test gets its own empty repository ledger (the rule is tested against the
    real one in tests/test_release.py, on purpose)."""
    from physiotouch.release import ledger

    monkeypatch.setattr(ledger, "REPOSITORY_LEDGER", tmp_path / "repository_releases" / ledger.LEDGER)
