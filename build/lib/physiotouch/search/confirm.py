"""A search's last stage: its best configuration confirmed across objects (`ablation=confirm`: 5 object folds x 2
seeds, evaluated), written as `confirm_command.txt` and, with search.confirm=true, run and reported."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import optuna

from .params import override_text
from .search_report import append_confirmation

log = logging.getLogger(__name__)


def write_confirm_command(study: optuna.Study, sweep_dir: Path, kept: dict, direction: str) -> list[str] | None:
    """`confirm_command.txt`: the best complete trial's parameters over the search's kept overrides.
    -> the command's overrides (after `python -m physiotouch.train -m`), or None without a complete trial."""
    complete = optuna.trial.TrialState.COMPLETE
    done = [t for t in study.trials if t.state == complete and not t.user_attrs.get("penalised")]
    if not done:
        return None
    best = (min if direction == "minimize" else max)(done, key=lambda t: t.value)
    kept = {**kept, **{k: override_text(v) for k, v in best.params.items()}}
    overrides = ["ablation=confirm", *[f"{k}={v}" for k, v in kept.items()]]
    command = " ".join(["python -m physiotouch.train -m", *overrides])
    (sweep_dir / "confirm_command.txt").write_text(command + "\n")
    log.info("confirm the best configuration across objects: %s", command)
    return overrides


def run_confirmation(sweep_dir: Path, overrides: list[str], search: dict, summary: dict) -> None:
    """search.confirm=true: run the confirmation as its own multirun under SWEEP/confirm (a fresh process, so the
    search's Hydra state is not reused) and add its result across objects to the search report beside the search's
    own best."""
    out = sweep_dir / "confirm"
    extra = [str(o) for o in search.get("confirm_overrides") or []]
    cmd = [sys.executable, "-m", "physiotouch.train", "-m", *overrides, *extra, f"hydra.sweep.dir={out}"]
    log.info("confirming the best configuration across objects: %s", " ".join(cmd[1:]))
    proc = subprocess.run(cmd, cwd=Path.cwd())
    if proc.returncode != 0:
        raise RuntimeError(f"the confirmation stage failed (exit {proc.returncode}); its runs are in {out}")
    append_confirmation(sweep_dir, out, summary, search.get("metric") or "val/objective")
