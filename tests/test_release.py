"""The release (test set once, ledger, sums, generated blocks, tag) and runs that survive faults."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from physiotouch.checkpoints.io import atomic_torch_save
from physiotouch.preflight import PreflightError
from physiotouch.release.bundle import ReleaseError, finalize
from physiotouch.release.docs_block import BEGIN, results_block
from physiotouch.training.run import run_training
from physiotouch.utils.files import sha256_file

from .conftest import train_overrides


def release_copy(trained_run: Path, tmp: Path) -> Path:
    """A copy of the trained run whose ledger lives in this test's own data directory."""
    run = tmp / "run"
    shutil.copytree(trained_run, run)
    cfg_file = run / "config_resolved.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg["paths"]["data_dir"] = str(tmp / "datadir")
    cfg_file.write_text(yaml.safe_dump(cfg))
    summary = json.loads((run / "summary.json").read_text())
    summary["best_checkpoint"] = str(run / "checkpoints" / Path(summary["best_checkpoint"]).name)
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def docs(tmp: Path) -> Path:
    root = tmp / "docs"
    root.mkdir()
    for name in ("README.md", "Task.md"):
        (root / name).write_text(f"# {name}\n\n## Final settings and results\n{BEGIN}\nnothing yet\n"
                                 f"<!-- physiotouch:final-results:end -->\n\nafter\n")
    return root


def test_finalize_once_then_refuse_then_force(trained_run, tmp_path):
    run, root = release_copy(trained_run, tmp_path), docs(tmp_path)
    out = finalize(run, tmp_path / "rel", docs_root=root, log=lambda *_: None)
    for name in ("model.ckpt", "model.safetensors", "config_resolved.yaml", "splits.json", "run_info.json",
                 "test_metrics.json", "requirements-freeze.txt", "environment.json", "REPRODUCE.md", "release.json"):
        assert (out / name).is_file(), name
    sums = dict(reversed(line.split("  ")) for line in (out / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "SHA256SUMS"}
    assert all(sha256_file(out / name) == digest for name, digest in sums.items())
    test = json.loads((out / "test_metrics.json").read_text())
    assert test["test/clips"] > 0 and test["test/objective"] > 0
    assert "nothing yet" in (root / "README.md").read_text()  # a look without --tag publishes nothing
    block = results_block(out)  # what --tag (or --docs-from) writes into the README
    assert f"{test['test/objective']:.4f}" in block and "evaluated exactly once" in block
    assert "Test probes beside their controls" in block and "insufficient data" in block  # 1 test object
    controls = test["controls"]["test/probe_sensor_accuracy"]
    assert {"raw_pixels", "pixel_change", "untrained", "contact_features", "majority"} <= set(controls)
    assert all(c["verdict"] == "insufficient data" and c["diff_ci95"] is None for k, c in controls.items()
               if k != "better_than_all")
    ledger = json.loads((tmp_path / "datadir" / "test_ledger.json").read_text())
    assert len(next(iter(ledger.values()))) == 1

    with pytest.raises(ReleaseError, match="already evaluated.*best-epoch.*--force"):
        finalize(run, tmp_path / "rel2", docs_root=root, log=lambda *_: None)
    forced = finalize(run, tmp_path / "rel3", force=True, docs_root=root, log=lambda *_: None)
    assert json.loads((forced / "release.json").read_text())["forced"] is True
    assert "Forced re-evaluation" in results_block(forced)
    assert len(next(iter(json.loads((tmp_path / "datadir" / "test_ledger.json").read_text()).values()))) == 2


def test_tag_only_on_a_clean_tree(trained_run, tmp_path):
    run, root = release_copy(trained_run, tmp_path), docs(tmp_path)
    git = lambda *a: subprocess.run(["git", *a], cwd=root, check=True, capture_output=True, text=True)  # noqa: E731
    git("init", "-q")
    (root / ".gitignore").write_text("/releases/*\n!/releases/test_ledger.json\n")  # as this repository's
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init")
    git("add", ".")
    (root / "README.md").write_text((root / "README.md").read_text())  # staged but uncommitted: dirty
    with pytest.raises(ReleaseError, match="uncommitted changes"):
        finalize(run, tmp_path / "rel", tag="v1", docs_root=root, log=lambda *_: None)
    assert not (tmp_path / "datadir" / "test_ledger.json").exists()  # refused before the test set was looked at
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "docs")
    subprocess.run(["git", "config", "user.email", "t@t"], cwd=root, check=True)
    subprocess.run(["git", "config", "user.name", "t"], cwd=root, check=True)
    finalize(run, root / "releases" / "v1", tag="v1", docs_root=root, log=lambda *_: None)
    assert "v1" in git("tag").stdout and not git("status", "--porcelain").stdout.strip()
    committed = git("show", "--name-only", "--format=", "v1").stdout.split()
    # the block, the ledger and the small release.json it cites are committed; the model files are not
    assert {"README.md", "Task.md", "releases/test_ledger.json", "releases/v1/release.json"} <= set(committed)
    assert not [f for f in committed if f.endswith((".ckpt", ".safetensors"))]
    assert "releases/v1/release.json" in (root / "README.md").read_text()


@pytest.mark.slow
def test_finalize_names_an_unreadable_test_frame(trained_run, tmp_path):
    run = release_copy(trained_run, tmp_path)
    cfg = yaml.safe_load((run / "config_resolved.yaml").read_text())
    data = tmp_path / "data"
    shutil.copytree(cfg["data"]["root"], data)
    splits = json.loads((run / "splits.json").read_text())
    victim = data / splits["sequences"]["test"][0] / "5.png"
    victim.write_bytes(b"not a png")
    cfg["data"]["root"], cfg["data"]["index"] = str(data), str(data / "index.csv")
    (run / "config_resolved.yaml").write_text(yaml.safe_dump(cfg))
    res = subprocess.run([sys.executable, "-m", "physiotouch.finalize", str(run), "--out", str(tmp_path / "rel"),
                          "--docs-root", str(docs(tmp_path))], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    # the data changed (a frame's size), so the version check speaks first; both name the problem clearly
    assert "data changed" in res.stderr or str(victim) in res.stderr


def _cmd(data: Path, out: Path, *extra: str) -> list[str]:
    overrides = [o for o in train_overrides(data, out) if not o.startswith("paths.output_dir")]
    return [sys.executable, "-m", "physiotouch.train", *overrides, f"hydra.run.dir={out}", "trainer.max_epochs=4",
            *extra]


def _mtime(path: Path) -> float:
    return path.stat().st_mtime_ns if path.exists() else 0


@pytest.mark.slow
def test_killed_at_random_points_and_resumed_equals_uninterrupted(small_data, tmp_path):
    clean = subprocess.run(_cmd(small_data, tmp_path / "clean"), capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr[-2000:]
    out, rng, kills = tmp_path / "killed", random.Random(0), 0
    last = out / "checkpoints" / "last.ckpt"
    # One kill at a random moment of start-up, then two at random moments of an epoch just after a checkpoint
    # was written (mid-epoch, with a last.ckpt to resume from), then a run to the end.
    plan = [("start", rng.uniform(1.0, 4.0)), ("epoch", rng.uniform(0.0, 1.0)), ("epoch", rng.uniform(0.0, 1.0))]
    for attempt in range(len(plan) + 3):
        proc = subprocess.Popen(_cmd(small_data, out, "ckpt_path=last"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        if attempt < len(plan):
            kind, delay = plan[attempt]
            seen, deadline = _mtime(last), time.time() + 120
            while kind == "epoch" and _mtime(last) == seen and proc.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            time.sleep(delay)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
        if proc.wait(timeout=300) == 0:
            break
    assert kills >= 2 and (out / "history.json").is_file()
    a = json.loads((tmp_path / "clean" / "history.json").read_text())
    b = json.loads((out / "history.json").read_text())
    assert len(a) == len(b) == 5
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-9), k
    # metrics.csv too: the rows written before each kill are kept, the ones after the checkpoint written once more
    logged_a, logged_b = _logged(tmp_path / "clean"), _logged(out)
    assert logged_a.keys() == logged_b.keys()
    for key, value in logged_a.items():
        assert value == pytest.approx(logged_b[key], rel=1e-5, abs=1e-7), key


def _logged(run: Path) -> dict:
    """metrics.csv as {(step, metric): value}, every metric but wall-clock times; a repeated row fails."""
    out = {}
    with (run / "csv" / "metrics.csv").open() as fh:
        for row in csv.DictReader(fh):
            for k, v in row.items():
                if v != "" and k not in ("step", "epoch") and "time" not in k:  # every row carries its epoch
                    key = (int(row["step"]), k)
                    assert key not in out, f"{key} logged twice"
                    out[key] = float(v)
    return out


@pytest.mark.slow
def test_a_kill_while_saving_never_leaves_a_corrupt_checkpoint(tmp_path):
    target = tmp_path / "last.ckpt"
    writer = ("import sys, torch\nfrom physiotouch.checkpoints.io import atomic_torch_save\n"
              "big = {'w': torch.randn(4_000_000)}\nwhile True:\n    atomic_torch_save(big, sys.argv[1])\n")
    rng = random.Random(1)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", writer, str(target)])
        time.sleep(rng.uniform(3.0, 4.5))
        proc.kill()
        proc.wait()
        if target.exists():
            assert torch.load(target, weights_only=True)["w"].shape == (4_000_000,)
    assert target.exists()
    leftovers = {p.name for p in tmp_path.iterdir()} - {"last.ckpt"}
    assert all(n.startswith(".last.ckpt.") and n.endswith(".tmp") for n in leftovers)  # only hidden temp files


def test_unwritable_output_and_full_disk_fail_before_training(small_data, tmp_path, make_cfg):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PreflightError, match="not writable"):
        run_training(make_cfg(small_data, blocker / "out"))
    with pytest.raises(PreflightError, match="free"):
        run_training(make_cfg(small_data, tmp_path / "out", "preflight.min_free_disk_mb=1e12"))
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.slow
def test_corrupt_or_malicious_last_checkpoint_gives_a_clear_error(small_data, tmp_path):
    out = tmp_path / "run"
    assert subprocess.run(_cmd(small_data, out, "trainer.max_epochs=1"), capture_output=True).returncode == 0
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:3000])
    res = subprocess.run(_cmd(small_data, out, f"ckpt_path={last}"), capture_output=True, text=True)
    assert res.returncode == 2 and f"checkpoint '{last}' is corrupt" in res.stderr and "Traceback" not in res.stderr

    class Exploit:
        def __reduce__(self):
            return (exec, ("open('PWNED', 'w').write('x')",))

    atomic_torch_save({"state_dict": {}, "x": Exploit()}, last)
    res = subprocess.run(_cmd(small_data, out, f"ckpt_path={last}"), capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and "refused to load" in res.stderr and not (tmp_path / "PWNED").exists()


def test_a_copied_run_with_another_data_folder_cannot_look_again(trained_run, tmp_path):
    run, root = release_copy(trained_run, tmp_path), docs(tmp_path)
    finalize(run, tmp_path / "rel", docs_root=root, log=lambda *_: None)
    assert (tmp_path / "rel" / "test_ledger.json").is_file()  # the ledger is kept with the release
    assert (root / "releases" / "test_ledger.json").is_file()  # and in the project's own ledger
    copy = tmp_path / "copy"
    shutil.copytree(run, copy / "run")
    cfg_file = copy / "run" / "config_resolved.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg["paths"]["data_dir"] = str(tmp_path / "another_datadir")  # a data folder with no ledger of its own
    cfg_file.write_text(yaml.safe_dump(cfg))
    summary = json.loads((copy / "run" / "summary.json").read_text())
    summary["best_checkpoint"] = str(copy / "run" / "checkpoints" / Path(summary["best_checkpoint"]).name)
    (copy / "run" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ReleaseError, match="already evaluated"):
        finalize(copy / "run", tmp_path / "rel2", docs_root=root, log=lambda *_: None)
    assert not (tmp_path / "another_datadir" / "test_ledger.json").exists()  # refused before looking


def test_a_split_that_trains_on_tested_objects_is_refused(trained_run, tmp_path):
    run, root = release_copy(trained_run, tmp_path), docs(tmp_path)
    finalize(run, tmp_path / "rel", docs_root=root, log=lambda *_: None)
    splits = json.loads((run / "splits.json").read_text())
    tested = splits["groups"]["test"]
    # another split (as a new data.split.seed gives): one of the tested objects now trains, another tests
    splits["groups"]["train"], splits["groups"]["test"] = splits["groups"]["train"][1:] + tested, \
        splits["groups"]["train"][:1]
    (run / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(ReleaseError, match=f"earlier release tested \\({', '.join(sorted(tested))}"):
        finalize(run, tmp_path / "rel2", docs_root=root, log=lambda *_: None)


def test_the_release_states_the_replicates_behind_its_configuration(trained_run, tmp_path):
    run, root = release_copy(trained_run, tmp_path), docs(tmp_path)
    reps = tmp_path / "reps"
    for name, change in (("seed2", {"seed": 2}), ("seed3", {"seed": 3}), ("other", {"loss": {"name": "x"}})):
        shutil.copytree(trained_run, reps / name)
        cfg_file = reps / name / "config_resolved.yaml"
        cfg = yaml.safe_load(cfg_file.read_text())
        for key, value in change.items():
            cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
        cfg_file.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ReleaseError, match="no run under"):  # refused before the look: the ledger stays empty
        finalize(run, tmp_path / "rel0", docs_root=root, log=lambda *_: None, replicates=[reps / "other"])
    assert not (tmp_path / "datadir" / "test_ledger.json").exists()
    out = finalize(run, tmp_path / "rel", docs_root=root, log=lambda *_: None, replicates=[reps])
    behind = json.loads((out / "release.json").read_text())["replicates"]
    assert sorted(Path(r).name for r in behind["runs"]) == ["seed2", "seed3"]  # not the other configuration
    best = min(r["val/objective"] for r in json.loads((trained_run / "history.json").read_text()) if r["epoch"] >= 0)
    assert behind["val/objective"]["n"] == 2 and behind["val/objective"]["mean"] == pytest.approx(best)
    assert f"val/objective {best:.4f} ± 0.0000" in results_block(out)


def test_each_test_object_is_looked_at_once_whatever_the_route(trained_run, tmp_path, monkeypatch):
    """Issue 20's three routes to a second look, against this repository's real ledger (v0.1.0 tested cylinder and
    ring, v0.2.0 ridged and sphere): another --docs-root, a subset of a tested set, a new mix holding one tested
    object. Each is refused before anything is looked at or written; an untested set passes."""
    from physiotouch.paths import REPO_DIR
    from physiotouch.release import ledger

    monkeypatch.setattr(ledger, "REPOSITORY_LEDGER", REPO_DIR / "releases" / ledger.LEDGER)
    real = json.loads(ledger.REPOSITORY_LEDGER.read_text())
    assert {"cylinder", "ring", "ridged", "sphere"} <= set(ledger.tested_groups([ledger.REPOSITORY_LEDGER]))
    other_docs = docs(tmp_path)  # route 1: a docs root with no ledger of its own
    ledgers = ledger.known_ledgers(other_docs, tmp_path / "no_data_dir")
    assert ledger.REPOSITORY_LEDGER in ledgers

    def split(test: list[str]) -> dict:
        return {"groups": {"train": ["edge", "dotted"], "val": ["flat"], "test": test}}

    for test, named in ((["ridged", "sphere"], "already evaluated"),  # the same set, from elsewhere
                        (["ridged"], "ridged \\(v0.2.0-synthetic"),  # route 2: a subset of a tested set
                        (["ring", "hexagon2"], "ring \\(v0.1.0-synthetic")):  # route 3: one tested object in a new mix
        with pytest.raises(ReleaseError, match=named):
            ledger.check_first_look(split(test), ledgers, force=False)
    assert ledger.check_first_look(split(["hexagon2", "pyramid2"]), ledgers, force=False) == ([], {})
    # through the command: the tiny run's split as if it tested `ridged` (the split a run makes that does not
    # exclude it); refused with another docs root before anything is read, looked at or written
    run = release_copy(trained_run, tmp_path)
    splits = json.loads((run / "splits.json").read_text())
    splits["groups"]["test"] = ["ridged"]
    (run / "splits.json").write_text(json.dumps(splits))
    readme = (other_docs / "README.md").read_text()
    with pytest.raises(ReleaseError, match="ridged"):
        finalize(run, tmp_path / "rel", docs_root=other_docs, log=lambda *_: None)
    assert not (tmp_path / "rel").exists() and not (tmp_path / "datadir" / "test_ledger.json").exists()
    assert (other_docs / "README.md").read_text() == readme  # a look that fails writes no document
    assert json.loads(ledger.REPOSITORY_LEDGER.read_text()) == real
