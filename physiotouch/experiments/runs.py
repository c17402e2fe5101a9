"""Reading finished runs (job folders written by `python -m physiotouch.train`) for reports and releases."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from physiotouch.utils.files import sha256_file


class RunError(RuntimeError):
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
        return [r for r in self.history if r.get("epoch", 0) >= 0]

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
        best = self.summary.get("best_checkpoint")
        if not best or not Path(best).is_file():
            return "-"
        return f"{Path(best).name}@{sha256_file(best)[:10]}"


def _json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        if default is not None:
            return default
        raise RunError(f"'{path}' is missing: the run did not finish (or is not a physiotouch run)") from None
    except json.JSONDecodeError as err:
        raise RunError(f"'{path}' is not valid JSON ({err})") from None


def load_run(path: Path) -> Run:
    cfg_file = path / ".hydra" / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else {}
    over_file = path / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(over_file.read_text()) if over_file.is_file() else []
    eval_file = path / "eval" / "metrics.json"
    return Run(path=path, config=config or {}, overrides=list(overrides or []),
               run_info=_json(path / "run_info.json"), splits=_json(path / "splits.json"),
               history=_json(path / "history.json"), summary=_json(path / "summary.json", {}),
               health=_json(path / "health.json", {}), eval_metrics=_json(eval_file, {}) if eval_file.is_file() else {})


def find_runs(folders: list[Path]) -> list[Run]:
    """Every finished run under the folders (a run folder itself, a sweep folder, or a folder of sweeps)."""
    found: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            raise RunError(f"'{folder}' is not a folder")
        candidates = [folder] if (folder / "run_info.json").is_file() else sorted(
            p.parent for p in folder.rglob("run_info.json") if "wandb" not in p.parts)
        found += [p for p in candidates if (p / "history.json").is_file()]
    if not found:
        raise RunError(f"no finished run (a folder with run_info.json and history.json) under {folders}")
    return [load_run(p) for p in dict.fromkeys(found)]


def check_comparable(runs: list[Run]) -> None:
    keys = {}
    for run in runs:
        keys.setdefault(run.split_key, []).append(run.path)
    if len(keys) > 1:
        groups = "\n".join(f"  data version {k[0]}, split {k[1]}: {', '.join(str(p) for p in v[:3])}"
                           f"{' ...' if len(v) > 3 else ''}" for k, v in keys.items())
        raise RunError("refusing to compare runs made on different data versions or splits:\n" + groups +
                       "\nReport each group separately (or rerun them on one split).")
