"""The job's side of a search: report the learning curve to its Optuna trial and stop when the pruner says so.

A job launched by physiotouch's sweeper finds its trial in the sweep's storage by its Hydra job number (the sweeper
launches trial N as job N), so this works wherever the job runs: in the sweeper's process, in a submitit process,
or on a SLURM node that reaches the storage. After each validation epoch it reports `optimized_metric`; when the
trial's pruner (`hydra.sweeper.pruner`) prunes, it marks the trial and asks Lightning to stop after this epoch, so
the run still writes its checkpoints and run files. The sweeper then records the trial PRUNED with its last value.
(optuna-integration's callback raises instead, which would skip the run files; hence our own.)
"""

from __future__ import annotations

import logging
import math

import lightning as L
import optuna
from lightning.pytorch.trainer.states import TrainerFn

from . import storage as st

log = logging.getLogger(__name__)


def _sweep_config():
    """This job's Hydra config when physiotouch's sweeper launched it, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hc = HydraConfig.get()
    except ValueError:  # not inside a Hydra app (tests, notebooks)
        return None
    if hc.mode != RunMode.MULTIRUN or not str(hc.sweeper.get("_target_", "")).endswith("OptunaSweeper"):
        return None
    return hc


def this_jobs_trial() -> optuna.trial.Trial | None:
    """This job's trial (None outside physiotouch's sweeper); the trial is told where the job writes, so that a
    sweep that outlives this job's sweep can mark the folder if the job is killed."""
    hc = _sweep_config()
    if hc is None:
        return None
    from hydra.utils import instantiate

    storage = st.open_storage(st.storage_url(hc.sweeper.get("storage"), hc.sweep.dir))
    pruner = instantiate(hc.sweeper.pruner) if hc.sweeper.get("pruner") else optuna.pruners.NopPruner()
    name = st.study_name(hc.sweeper.get("study_name"), hc.job.name)
    study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
    trial = st.trial_by_number(study, storage, int(hc.job.num))
    trial.set_user_attr(st.JOB_DIR_ATTR, str(hc.runtime.output_dir))
    return trial


class ReportToTrial(L.Callback):
    def __init__(self, metric: str):
        self.metric = metric
        self.trial: optuna.trial.Trial | None = None
        self.pruned_at: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and self.trial is None:
            self.trial = this_jobs_trial()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        epoch, prune = trainer.current_epoch, False
        value = trainer.callback_metrics.get(self.metric)
        if self.trial is not None and value is not None and math.isfinite(float(value)):
            # The step is the number of epochs trained (the resource of successive halving and Hyperband), so a
            # rung at min_resource=1 comes after the first epoch; `pruned_at_epoch` keeps the 0-based epoch index.
            self.trial.report(float(value), epoch + 1)
            last = trainer.max_epochs is not None and epoch >= trainer.max_epochs - 1
            prune = not last and self.trial.should_prune()  # pruning the last epoch would save nothing
            if prune:
                self.trial.set_user_attr(st.PRUNED_ATTR, epoch)
        if trainer.strategy.broadcast(prune):  # rank zero decides for every rank
            self.pruned_at = epoch
            trainer.should_stop = True
            log.info("trial pruned after epoch %d (%s = %.6g): stopping after this epoch", epoch, self.metric,
                     float(value))


def search_callbacks(metric: str) -> list[L.Callback]:
    """[ReportToTrial] for a job of physiotouch's sweeper, [] otherwise."""
    return [ReportToTrial(metric)] if _sweep_config() is not None else []
