"""Logger set-up beyond what the logger configs say: W&B's step metrics, tags and the run's config; a CSV logger
that survives a resume."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import DictConfig

from physiotouch.utils.files import atomic_write_text
from physiotouch.utils.plain import to_plain


def instantiate_loggers(cfg: DictConfig) -> list:
    """The loggers of the `logger` config group (any number, each with its `_target_`)."""
    import hydra

    return [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values()]


def finish_wandb() -> None:
    """Close the W&B run, if one is open: one run per job, closed before a sweep's next job starts."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def configure_wandb(loggers: list, cfg: DictConfig) -> None:
    """Per W&B logger: tag the search stage, log the resolved config, define each panel's step metric."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        if not isinstance(lg, WandbLogger):
            continue
        run = lg.experiment
        run.tags = tuple(run.tags or ()) + tuple(str(t) for t in cfg.get("tags") or ())
        stage = (cfg.get("search") or {}).get("stage")
        if stage:
            run.tags = tuple(run.tags or ()) + (f"search={stage}",)
        lg.log_hyperparams(to_plain(cfg))
        # The reference's panels: batch metrics against the iteration, epoch and validation metrics per epoch.
        run.define_metric("batch/iteration")
        run.define_metric("batch/*", step_metric="batch/iteration")
        run.define_metric("epoch")
        for prefix in ("epoch/*", "val/*"):
            run.define_metric(prefix, step_metric="epoch")


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSV logger deletes `metrics.csv` when its folder exists; a resumed run would lose every row
    written before the kill. This one keeps the rows up to the checkpoint it resumes from (`resume_from`: the
    checkpoint's step, epoch and epoch-end summary, `check_resumable`) and replaces the later ones, which the resumed
    run writes again; an epoch-end summary the kill kept from the file is written from the checkpoint."""

    resume_from: tuple[int, int, dict] | None = None  # (step, epoch, summary) of the checkpoint; None: a fresh run

    @property
    def experiment(self):
        if self._experiment is None:
            self._experiment = _ResumingWriter(self.log_dir, self.resume_from)
        return self._experiment


class _ResumingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_from: tuple[int, int] | None):
        self._resume_from = resume_from
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:  # called by the base __init__ instead of deleting metrics.csv
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self._resume_from is None:
            path.unlink()  # a fresh run (the run folder's lock and checks make sure it is this run's own file)
            return
        step, epoch, summary = self._resume_from
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            fields, rows = list(reader.fieldnames or []), list(reader)

        def before_checkpoint(row: dict) -> bool:
            try:
                row_step = int(float(row.get("step") or 0))
                row_epoch = float(row["epoch"]) if row.get("epoch") not in (None, "") else None
            except ValueError:
                return False
            if row_epoch is None:  # e.g. the LR monitor's row, logged as a batch starts: step S is the next batch's
                return row_step < step
            return row_step <= step and row_epoch <= epoch

        kept = [r for r in rows if before_checkpoint(r)]
        # kept rows hold a valid epoch or none (before_checkpoint dropped the others)
        if summary and not any(r.get(k) not in (None, "") for r in kept if r.get("epoch") not in (None, "")
                               and float(r["epoch"]) == epoch for k in summary):
            # as Lightning logs it: float32 values, at the epoch's last batch (step − 1), with the epoch
            kept.append({"step": str(step - 1), "epoch": str(epoch),
                         **{k: repr(float(np.float32(v))) for k, v in summary.items()}})
            fields += [k for k in summary if k not in fields]
        atomic_write_text(path, _csv_text(fields, kept))
        self.metrics_keys = sorted(fields)


def _csv_text(fields: list[str], rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=sorted(fields))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
