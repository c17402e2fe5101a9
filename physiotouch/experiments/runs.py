"""Reading finished runs (job folders written by `python -m physiotouch.train`) for reports and releases."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from physiotouch.cli import UserError
from physiotouch.run_folder import RunDir, RunFolderError, trained_epochs
from physiotouch.utils.files import sha256_file


class RunError(UserError):
    """Runs that cannot be read or must not be compared; the message names the folders."""


@dataclass
class Run:
    path: Path
    config: dict
    overrides: list[str]
    run_info: dict
    splits: dict
    history: list[dict]
    summary: dict
    health: dict
    eval_metrics: dict = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def scheme(self) -> str:
        return str(self.config.get("loss", {}).get("name", "?"))

    @property
    def replicate(self) -> str:
        """What repeats a configuration: the seed, and the fold under K-fold validation."""
        split = self.splits.get("split") or {}
        return f"seed {self.seed}" + (f" fold {split.get('fold')}" if (split.get("k_folds") or 0) >= 2 else "")

    @property
    def unit(self) -> str:
        """The unit of replication: what varies independently. Under K-fold the object fold (its seeds share their
        objects, so they are averaged within the fold, never counted as replicates); else the seed."""
        split = self.splits.get("split") or {}
        return f"fold {split.get('fold')}" if (split.get("k_folds") or 0) >= 2 else f"seed {self.seed}"

    @property
    def split_key(self) -> tuple:
        """Runs are comparable only on the same data version and the same split; under K-fold, folds of one
        partition (same test set, same k and split seed) are replicates of each other."""
        s, split = self.splits, dict(self.splits.get("split") or {})
        if (split.get("k_folds") or 0) >= 2:
            split.pop("fold", None)
            return (s.get("data_version"), json.dumps(split, sort_keys=True),
                    json.dumps(s.get("groups", {}).get("test"), sort_keys=True))
        return (s.get("data_version"), json.dumps(split, sort_keys=True), json.dumps(s.get("groups"), sort_keys=True))

    def epochs(self) -> list[dict]:
        """The trained epochs' rows (history.json's epoch -1 is the untrained model's validation)."""
        return trained_epochs(self.history)

    def best_row(self, metric: str, mode: str = "min") -> dict:
        rows = [r for r in self.epochs() if metric in r]
        if not rows:
            return {}
        pick = min if mode == "min" else max
        return pick(rows, key=lambda r: r[metric])

    def metric(self, metric: str, mode: str = "min") -> float | None:
        """A validation metric: the best epoch's value for per-epoch metrics, else the evaluation's value."""
        row = self.best_row(metric, mode)
        if row:
            return float(row[metric])
        value = self.eval_metrics.get(metric)
        return float(value) if value is not None else None

    def checkpoint_id(self) -> str:
        best = RunDir(self.path).best_checkpoint()  # summary.json names it relative to the run (older runs: absolute)
        return f"{best.name}@{sha256_file(best)[:10]}" if best is not None else "-"


def load_run(path: Path) -> Run:
    """A finished run's files (RunDir's readers), every value as the run resolved it (`config_resolved.yaml`)."""
    run = RunDir(path)
    try:
        loaded = Run(path=path, config=run.config(), overrides=run.overrides(), run_info=run.run_info(),
                     splits=run.splits(), history=run.history(), summary=run.summary(), health=run.health(),
                     eval_metrics=run.eval_metrics())
    except RunFolderError as err:
        raise RunError(str(err)) from None
    problem = _shape_problem(loaded)
    if problem:
        raise RunError(problem)
    return loaded


def _shape_problem(run: Run) -> str | None:
    """What a run folder's file holds that no physiotouch run writes (a list for a mapping, a string for a number)."""
    for name, value in ((RunDir.CONFIG, run.config), (RunDir.RUN_INFO, run.run_info), (RunDir.SPLITS, run.splits),
                        (RunDir.SUMMARY, run.summary), (RunDir.EVAL_METRICS, run.eval_metrics)):
        if value is not None and not isinstance(value, dict):
            return f"{name} holds a {type(value).__name__}, not a mapping"
    if run.health is not None and not isinstance(run.health, dict):
        return f"health.json holds a {type(run.health).__name__}, not a mapping"
    if not isinstance(run.history, list) or not all(isinstance(row, dict) for row in run.history):
        return f"{RunDir.HISTORY} is not a list of epoch rows"
    for row in run.history:
        for key, value in row.items():
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                return f"{RunDir.HISTORY}: epoch {row.get('epoch')!r} has {key}={value!r}, not a number"
    split = run.splits.get("split")
    if not isinstance(run.splits.get("groups", {}), dict) or (split is not None and not isinstance(split, dict)):
        return f"{RunDir.SPLITS} does not hold a split and its groups"
    return None


def find_runs(folders: list[Path]) -> tuple[list[Run], list[str]]:
    """Every finished run under the folders (a run folder itself, a sweep folder, or a folder of sweeps).
    -> (runs, one line per run folder that was skipped and why: unfinished, or a file cut off or unreadable)."""
    found: list[Path] = []
    skipped: list[str] = []
    for folder in folders:
        if not folder.is_dir():
            raise RunError(f"'{folder}' is not a folder")
        candidates = [folder] if RunDir(folder).has(RunDir.RUN_INFO) else sorted(
            p.parent for p in folder.rglob(RunDir.RUN_INFO) if "wandb" not in p.parts)
        for p in candidates:
            status = RunDir(p).status()
            if status is not None:  # failed, or killed mid-run (its sweep's survivor marked it stale)
                skipped.append(f"{p}: {status.get('status', 'failed')}" + (
                    f" (trial {status['trial']})" if "trial" in status else "") + f": {status.get('reason', '')}")
            elif RunDir(p).has(RunDir.HISTORY):
                found.append(p)
            else:
                skipped.append(f"{p}: unfinished (no history.json yet; still running, killed or failed)")
    runs = []
    for p in dict.fromkeys(found):
        try:
            runs.append(load_run(p))
        except RunError as err:
            skipped.append(f"{p}: {err}")
    if not runs:
        raise RunError(f"no finished run (a folder with run_info.json and history.json) under "
                       f"{', '.join(map(str, folders))}" + "".join(f"\n  skipped {s}" for s in skipped))
    return runs, skipped


def flat(config: dict, prefix: str = "") -> dict[str, object]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become tuples (hashable, comparable)."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, f"{name}."))
        else:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


# Settings that change what val/objective measures: runs that differ in one are not compared (unless allowed).
MUST_MATCH = {"validation mask ratio": ("validation.mask_ratio",), "norm_pix_loss": ("model.norm_pix_loss",),
              "image size": ("model.encoder.image_size",),
              "model size": tuple(f"model.{part}.{k}" for part in ("encoder", "decoder") for k in
                                  ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"))}


def check_comparable(runs: list[Run], allow_mixed: bool = False) -> list[str]:
    """Refuse (RunError) runs of different data versions or splits, and, unless `allow_mixed`, runs that differ in
    a setting of MUST_MATCH. -> the mixed settings (each a line), for the top of the report."""
    keys = {}
    for run in runs:
        keys.setdefault(run.split_key, []).append(run.path)
    if len(keys) > 1:
        groups = "\n".join(f"  data version {k[0]}, split {k[1]}: {', '.join(str(p) for p in v[:3])}"
                           f"{' ...' if len(v) > 3 else ''}" for k, v in keys.items())
        raise RunError("refusing to compare runs made on different data versions or splits:\n" + groups +
                       "\nReport each group separately (or rerun them on one split).")
    mixed, configs = [], {run.path: flat(run.config) for run in runs}
    for setting, cfg_keys in MUST_MATCH.items():
        values: dict[tuple, list[Path]] = {}
        for run in runs:
            config = configs[run.path]
            values.setdefault(tuple(config.get(k) for k in cfg_keys), []).append(run.path)
        if len(values) > 1:
            mixed.append(f"{setting} differs: " + "; ".join(
                f"{', '.join(map(str, v)) if len(v) > 1 else v[0]} in {', '.join(p.name for p in paths[:3])}"
                f"{' ...' if len(paths) > 3 else ''}" for v, paths in values.items()))
    if mixed and not allow_mixed:
        raise RunError("refusing to compare runs whose validation numbers measure different things:\n  " +
                       "\n  ".join(mixed) + "\nReport them separately, or pass --allow-mixed (said at the top of "
                                            "the report)")
    return mixed


def commits(runs: list[Run]) -> dict[str, list[Path]]:
    """Code commit (with '+dirty') -> runs made with it."""
    out: dict[str, list[Path]] = {}
    for run in runs:
        git = run.run_info.get("git") or {}
        out.setdefault(f"{git.get('commit') or 'unknown'}{'+dirty' if git.get('dirty') else ''}", []).append(run.path)
    return out
