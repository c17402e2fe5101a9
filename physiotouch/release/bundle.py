"""Lock a release: the test split evaluated once, the model, its settings, environment and commands archived with
SHA-256 sums, and the "Final settings and results" blocks of Task.md and README.md generated from those files
(`docs_block`)."""

from __future__ import annotations

import datetime as dt
import json
import platform
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from physiotouch.checkpoints.export import export_safetensors
from physiotouch.checkpoints.format import load_model, model_name, same_model
from physiotouch.data.build import rebuild_run_datamodule
from physiotouch.evaluation.test_split import evaluate_test
from physiotouch.paths import REPO_DIR
from physiotouch.run_folder import RunDir
from physiotouch.utils import markdown as md
from physiotouch.utils.devices import device_name
from physiotouch.utils.files import sha256_file
from physiotouch.utils.provenance import environment, git_state

from . import ledger
from .docs_block import replace_block, results_block
from .ledger import ReleaseError


@dataclass
class ReleaseSource:
    run: RunDir
    checkpoint: Path


def resolve_target(path: Path) -> ReleaseSource:
    """A run folder (its best checkpoint by validation) or a checkpoint inside a run folder."""
    if path.is_dir():
        run = RunDir(path)
        if not run.has(RunDir.SUMMARY):
            raise ReleaseError(f"'{path}' is not a finished training run (no {RunDir.SUMMARY})")
        best = run.best_checkpoint()
        if best is None:
            raise ReleaseError(f"the best checkpoint recorded in {run / RunDir.SUMMARY} "
                               f"({run.summary().get('best_checkpoint')}) does not exist in {run.checkpoints}")
        return ReleaseSource(run, best)
    if not path.is_file():
        raise ReleaseError(f"'{path}' does not exist")
    run = RunDir.of_checkpoint(path)
    if run is None:
        raise ReleaseError(f"'{path}' is not inside a training run folder (expected RUN/{RunDir.CHECKPOINTS}/NAME.ckpt "
                           f"with RUN/{RunDir.CONFIG})")
    return ReleaseSource(run, path)


def _setting(cfg: dict, target: ReleaseSource, *keys: str):
    node = cfg
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    if node is None:
        raise ReleaseError(f"{target.run / RunDir.CONFIG} has no {'.'.join(keys)}: it is not a physiotouch run's "
                           f"resolved config")
    return node


def check_own_checkpoint(target: ReleaseSource, ckpt: dict, cfg: dict, run_info: dict) -> None:
    """The checkpoint must be one the run itself wrote: inside its checkpoints/ (links resolved), stamped with the
    run's id, and of the run's model size. Otherwise the release would pair one model with another's numbers."""
    own_dir = target.run.checkpoints.resolve()
    if target.checkpoint.resolve().parent != own_dir:
        raise ReleaseError(f"'{target.checkpoint}' is not in {own_dir}: only a run's own checkpoints are released "
                           f"with its config and validation numbers")
    stamped = (ckpt.get("physiotouch") or {}).get("run_id")
    expected = run_info.get("run_id")
    if not expected:  # ownership cannot be proven: refuse rather than release a model beside another's numbers
        raise ReleaseError(f"{target.run / RunDir.RUN_INFO} has no run_id, so '{target.checkpoint}' cannot be shown "
                           f"to be this run's own checkpoint; finalize a run that physiotouch wrote, unedited")
    if stamped != expected:
        raise ReleaseError(f"'{target.checkpoint}' was not written by the run in '{target.run.path}' (run id "
                           f"{stamped} vs {expected} in {RunDir.RUN_INFO}): it belongs to another run; finalize that "
                           f"run instead")
    theirs, ours = ckpt["hyper_parameters"]["model_cfg"], cfg.get("model") or {}
    if not same_model(theirs, ours):
        raise ReleaseError(f"'{target.checkpoint}' holds a {model_name(theirs)} model but the run '{target.run.path}' "
                           f"trained {model_name(ours)}: it is not this run's checkpoint")


TAG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_tag(tag: str, docs_root: Path) -> None:
    """A tag that is a plain name (it also names the release folder under releases/), valid for git, new, on a clean
    tree, with a committer identity: all checked before the test split is looked at."""
    if not TAG_NAME.match(tag) or ".." in tag or tag.endswith((".lock", ".")):
        raise ReleaseError(f"--tag {tag!r} is not a plain name: use letters, digits, '.', '_' and '-' (starting with a "
                           f"letter or digit, no '..'), e.g. --tag v1.0")
    if subprocess.run(["git", "check-ref-format", f"refs/tags/{tag}"], cwd=docs_root, capture_output=True).returncode:
        raise ReleaseError(f"--tag {tag!r} is not a valid git tag name (git check-ref-format); choose another")
    if git_state(docs_root)["dirty"] is not False:  # dirty, or not a git checkout at all
        raise ReleaseError(f"--tag {tag}: the git tree at {docs_root} has uncommitted changes; commit them first "
                           f"(the tag must name exactly the code that made the release)")
    if subprocess.run(["git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}"], cwd=docs_root,
                      capture_output=True).returncode == 0:
        raise ReleaseError(f"--tag {tag}: the tag already exists in {docs_root}; choose another name")
    if subprocess.run(["git", "var", "GIT_COMMITTER_IDENT"], cwd=docs_root, capture_output=True).returncode:
        raise ReleaseError(f"--tag {tag}: git has no committer identity at {docs_root}; set user.name and user.email "
                           f"first (the release commit needs them)")


def finalize(path: Path, out: Path | None = None, force: bool = False, tag: str | None = None,
             docs_root: Path = REPO_DIR, batch_size: int = 64, log=print, replicates: list[Path] | None = None
             ) -> Path:
    if tag is not None:  # every precondition of the tag before anything is read or looked at
        check_tag(tag, docs_root)
    target = resolve_target(path)
    cfg, splits, run_info = target.run.config(), target.run.splits(), target.run.run_info()
    model, ckpt = load_model(target.checkpoint)
    check_own_checkpoint(target, ckpt, cfg, run_info)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d_%H-%M-%S")
    name = tag or f"release-{stamp}"
    out = out or docs_root / "releases" / name  # not a folder named by the run's own (untrusted) config
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # checked before the test split is looked at
        raise ReleaseError(f"release folder '{out}' exists and is not empty; a release is never overwritten: "
                           f"choose another --out or --tag")
    data_dir, mask_ratio = Path(str(_setting(cfg, target, "paths", "data_dir"))), \
        float(_setting(cfg, target, "validation", "mask_ratio"))
    key = ledger.split_key(splits)
    ledgers = ledger.known_ledgers(docs_root, data_dir)
    previous, reused = ledger.check_first_look(splits, ledgers, force)

    behind = None
    if replicates:  # read before the look, so that a bad folder cannot waste it
        from .replicates import replicate_summary

        behind = replicate_summary(replicates, cfg, splits["groups"]["test"])
        if not behind["runs"]:
            raise ReleaseError(f"no run under {', '.join(map(str, replicates))} has this run's trained settings and "
                               f"test objects; name the sweep folders of its configuration's folds x seeds")
    # checked before the look: a changed data set would waste it
    datamodule = rebuild_run_datamodule(cfg.get("data") or {}, str(target.run / RunDir.CONFIG), "test",
                                        target.run.data_change)
    device = device_name("auto")
    log(f"evaluating the test split once: {target.checkpoint}")
    metrics = evaluate_test(model, datamodule, batch_size, mask_ratio, device)
    out.mkdir(parents=True, exist_ok=True)
    project_ledger = docs_root / "releases" / ledger.LEDGER
    project_ledger.parent.mkdir(parents=True, exist_ok=True)
    entry = ledger.record([project_ledger, out / ledger.LEDGER, data_dir / ledger.LEDGER], key, {
        "checkpoint": str(target.checkpoint), "sha256": sha256_file(target.checkpoint), "release": name,
        "data_version": splits["data_version"], "split": splits.get("split"), "test_groups": splits["groups"]["test"],
        "forced": bool(previous or reused), "reused_tested_groups": sorted(reused), "metrics": metrics})

    _write_release(out, target, model, cfg, splits, metrics, entry, previous, name, behind)
    if not tag:  # the committed documents speak only of a published release
        log(f"README.md and Task.md unchanged: only a published release (--tag) writes their results block "
            f"(python -m physiotouch.finalize --docs-from {out} renders it by hand)")
        return out
    docs = [docs_root / "Task.md", docs_root / "README.md"]
    block = results_block(out)
    for doc in docs:
        if doc.is_file():
            replace_block(doc, block)
    # the small files the block cites stay with the ledger (the model files stay out: generated outputs)
    cited = [out / "release.json", out / ledger.LEDGER] if out.resolve().is_relative_to(docs_root.resolve()) else []
    files = [str(p.resolve().relative_to(docs_root.resolve())) for p in [*docs, project_ledger, *cited] if p.is_file()]
    subprocess.run(["git", "add", "-f", *files], cwd=docs_root, check=True)  # -f: the ledger under releases/
    subprocess.run(["git", "commit", "-q", "-m", f"Release {tag}: final settings and results"], cwd=docs_root,
                   check=True)
    subprocess.run(["git", "tag", "-a", tag, "-m", f"physiotouch release {tag} ({out})"], cwd=docs_root, check=True)
    log(f"committed the generated blocks, release.json and the ledger, and tagged {tag}")
    return out


def _write_release(out: Path, target: ReleaseSource, model, cfg: dict, splits: dict, metrics: dict, entry: dict,
                   previous: list, name: str, behind: dict | None = None) -> None:
    shutil.copy2(target.checkpoint, out / "model.ckpt")
    export_safetensors(model, out / "model.safetensors")
    for fname in RunDir.RELEASED:
        if target.run.has(fname):
            shutil.copy2(target.run / fname, out / fname)
    if (target.run.eval_dir / "report.md").is_file():
        shutil.copy2(target.run.eval_dir / "report.md", out / "validation_report.md")
        shutil.copy2(target.run.eval_dir / RunDir.EVAL_METRICS, out / "validation_metrics.json")
    (out / "test_metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    (out / "requirements-freeze.txt").write_text(freeze)
    (out / "environment.json").write_text(json.dumps({**environment(), "machine": platform.node()}, indent=2))
    run_info, summary = target.run.run_info(), target.run.summary()
    release = {"name": name, "created": entry["when"], "checkpoint": str(target.checkpoint),
               "checkpoint_sha256": entry["sha256"], "run": str(target.run.path), "git": git_state(),
               "trained_at_commit": run_info.get("git"), "data_version": splits["data_version"],
               "split": splits.get("split"), "test_groups": splits["groups"].get("test"),
               "settings": {"model": cfg["model"], "loss": cfg["loss"], "optim": cfg["optim"], "seed": cfg["seed"],
                            "max_epochs": cfg["trainer"]["max_epochs"], "batch_size": cfg["data"]["batch_size"],
                            "precision": run_info.get("precision")},
               "validation": {k: v for k, v in summary.items() if k.startswith("summary/")},
               "test": metrics, "test_evaluations_before": previous, "forced": entry["forced"],
               "reused_tested_groups": entry.get("reused_tested_groups", []), "replicates": behind}
    (out / "release.json").write_text(json.dumps(release, indent=2, default=str))
    (out / "REPRODUCE.md").write_text(reproduce_text(name, run_info, splits, target.checkpoint.name))
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    (out / "SHA256SUMS").write_text("".join(f"{sha256_file(p)}  {p.relative_to(out)}\n" for p in files))


def reproduce_text(name: str, run_info: dict, splits: dict, checkpoint: str) -> str:
    """REPRODUCE.md: commands rebuilt by the package, never pasted from a file. Every value read from the run folder
    is a single shell word (`shlex.quote`) or a checked commit id, so a hostile override or file name stays inert."""
    overrides = run_info.get("overrides") or []
    if not isinstance(overrides, list):
        overrides = []
    words = " ".join(shlex.quote(str(o)) for o in overrides)
    commit = md.commit((run_info.get("git") or {}).get("commit") if isinstance(run_info.get("git"), dict) else None)
    return (f"# Reproduce release {md.inert(name)}\n\n```bash\n"
            f"git checkout {commit if commit != 'unknown' else '<commit>'}\nbash scripts/setup.sh\n"
            f"# train (the run's own overrides; the data version must be {md.inert(splits.get('data_version'))})\n"
            f".venv/bin/python -m physiotouch.train {words}\n"
            f"# evaluate on validation\n.venv/bin/python -m physiotouch.evaluate "
            f"{shlex.quote('ckpt_path=RUN/checkpoints/' + checkpoint)}\n"
            f"# the test set was evaluated once for this release; a second look needs --force (and is recorded)\n"
            f".venv/bin/python -m physiotouch.finalize RUN --force\n```\n\n"
            f"Original command (as recorded, not to be run): {md.inert(run_info.get('command'))}\n"
            f"Environment: requirements-freeze.txt, environment.json. Data split: splits.json.\n")
