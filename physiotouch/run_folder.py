"""The run folder that `python -m physiotouch.train` writes, as one object: its file names, readers and writers.

Every command that reads or writes a run goes through `RunDir` (training writes it; evaluation, reports, searches
and the release read it), so a file's name and format live here only.

A run folder may come from someone else ("evaluate my run"): it is input like any other file a user hands over.
Its YAML is read with a safe loader that also refuses aliases (a few lines of nested aliases expand to gigabytes
when traversed), its files are size-capped, and what is read is data: nothing in it is instantiated (see
`physiotouch.data.build_datamodule`).
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from physiotouch.cli import UserError

MAX_BYTES = 16 * 2**20  # far above any file a run writes (history of 1,000 epochs: ~1 MiB)


def trained_epochs(history: list[dict]) -> list[dict]:
    """history.json's rows of trained epochs: its first row, epoch -1, is the untrained model's validation."""
    return [r for r in history if r.get("epoch", 0) >= 0]


class RunFolderError(UserError):
    """A run folder's file is missing, too large, malformed or of the wrong kind."""


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            raise yaml.YAMLError("aliases (*name) are not allowed in a run's files")
        return super().compose_node(parent, index)


def read_text(path: Path) -> str:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise RunFolderError(f"'{path}' is not a regular file; a run folder holds plain files")
        size = st.st_size
        if size > MAX_BYTES:
            raise RunFolderError(f"'{path}' is {size / 2**20:.0f} MiB, more than any run file should be "
                                 f"({MAX_BYTES // 2**20} MiB); it is not a physiotouch run file")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFolderError(f"'{path}' is missing: the run did not finish (or is not a physiotouch run)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RunFolderError(f"'{path}' cannot be read ({err})") from None


def read_yaml(path: Path, expect: type = dict):
    """A YAML file holding an `expect` (a config mapping, or the list of overrides)."""
    try:
        data = yaml.load(read_text(path), Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise RunFolderError(f"'{path}' is not valid YAML for a run file ({str(err).splitlines()[0]})") from None
    except RecursionError:
        raise RunFolderError(f"'{path}' is nested too deeply to be a run file") from None
    if not isinstance(data, expect):
        raise RunFolderError(f"'{path}' does not hold a {expect.__name__}")
    return data


def read_json(path: Path, default: Any = None) -> Any:
    if default is not None and not path.is_file():
        return default
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise RunFolderError(f"'{path}' is not valid JSON ({err}); the run was cut off while writing it") from None
    except RecursionError:
        raise RunFolderError(f"'{path}' is nested too deeply to be a run file") from None


@dataclass(frozen=True)
class RunDir:
    """One training run's folder. The files, in the order training writes them:

    config_resolved.yaml (every value resolved; the one config file readers use), splits.json (data version, split,
    groups), run_info.json (command, commit, environment, run id), checkpoints/ (best by val/objective, last,
    periodic), csv/metrics.csv, history.json (one row per epoch; epoch -1 is the untrained model), health.json,
    summary.json (best epoch, best checkpoint, the optimized value); eval/ (evaluation); status.json (a failed
    sweep job's reason, or `stale` with its trial number for a job killed with its sweep); .run.lock (its one
    writer).
    """

    path: Path

    CONFIG = "config_resolved.yaml"
    SPLITS = "splits.json"
    RUN_INFO = "run_info.json"
    HISTORY = "history.json"
    HEALTH = "health.json"
    SUMMARY = "summary.json"
    STATUS = "status.json"
    LOCK = ".run.lock"
    CHECKPOINTS = "checkpoints"
    LAST = "last.ckpt"
    EVAL = "eval"
    EVAL_METRICS = "metrics.json"
    EVAL_TIMINGS = "timings.json"  # seconds per phase of the evaluation
    METRICS_CSV = "csv/metrics.csv"
    OVERRIDES = ".hydra/overrides.yaml"  # Hydra's own record of the command line's overrides
    RELEASED = (CONFIG, SPLITS, RUN_INFO, SUMMARY, HEALTH, HISTORY)  # copied into a release

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def of_checkpoint(cls, ckpt: Path) -> "RunDir | None":
        """The run a checkpoint belongs to (RUN/checkpoints/NAME.ckpt beside RUN/config_resolved.yaml), if any."""
        run = cls(Path(ckpt).resolve().parent.parent)
        return run if run.has(cls.CONFIG) else None

    # --- places ---------------------------------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / self.LAST

    @property
    def eval_dir(self) -> Path:
        return self.path / self.EVAL

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    # --- readers (untrusted input: bounded, plain data) -----------------------------------------------------------
    def config(self) -> dict:
        return read_yaml(self.path / self.CONFIG)

    def overrides(self) -> list[str]:
        return [str(o) for o in read_yaml(self.path / self.OVERRIDES, list)] if self.has(self.OVERRIDES) else []

    def splits(self) -> dict:
        return read_json(self.path / self.SPLITS)

    def run_info(self) -> dict:
        return read_json(self.path / self.RUN_INFO)

    def history(self) -> list[dict]:
        history = read_json(self.path / self.HISTORY)
        if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            raise RunFolderError(f"'{self.path / self.HISTORY}' is not a list of epoch rows")
        return history

    def summary(self) -> dict:
        return read_json(self.path / self.SUMMARY, {})

    def health(self) -> dict:
        return read_json(self.path / self.HEALTH, {})

    def eval_metrics(self) -> dict:
        return read_json(self.eval_dir / self.EVAL_METRICS, {})

    def status(self) -> dict | None:
        """status.json: a sweep job that failed ({"status": "failed", "reason"}) or was killed with its sweep and
        marked by the sweep that retried it ({"status": "stale", "trial", "reason"}); None for a run without one."""
        if not self.has(self.STATUS):
            return None
        try:
            status = read_json(self.path / self.STATUS)
        except RunFolderError as err:
            return {"status": "unreadable", "reason": str(err)}
        return status if isinstance(status, dict) else {"status": "unreadable", "reason": "not a JSON object"}

    def failure(self) -> str | None:
        """The reason a sweep job recorded for failing (status.json), if it did."""
        status = self.status()
        return None if status is None else str(status.get("reason") or status.get("status"))

    def data_change(self, record: dict) -> str | None:
        """How the data or split a datamodule gives now (its `record`) differ from those this run used (splits.json),
        in a line; None when they are the same."""
        trained = self.splits()
        if trained.get("data_version") == record["data_version"] and trained.get("groups") == record["groups"]:
            return None
        return (f"the data or split differ from those the run used ({self.path / self.SPLITS}): data version "
                f"{trained.get('data_version')} then, {record['data_version']} now")

    def relative(self, path: str | Path | None) -> str | None:
        """A path inside this folder as written in its files: relative to the folder (a copied or moved run folder
        still names its own files); a path outside it as it is."""
        if not path:
            return None
        try:
            return str(Path(path).resolve().relative_to(self.path.resolve()))
        except ValueError:
            return str(path)

    def best_checkpoint(self) -> Path | None:
        """The best checkpoint by validation that summary.json names, if it lies in this run's checkpoints/."""
        best = self.summary().get("best_checkpoint") if self.has(self.SUMMARY) else None
        path = self.checkpoints / Path(best).name if best else None
        return path if path is not None and path.is_file() else None

    # --- writers (training's rank-zero process only; DDP starts one process per device) -------------------------
    def write_json(self, name: str, obj, indent: int = 2) -> None:
        (self.path / name).write_text(json.dumps(obj, indent=indent))

    def write_text(self, name: str, text: str) -> None:
        (self.path / name).write_text(text)
