"""One training run as configured, in three steps: build (data, module, trainer), fit, write the run's outputs.

`python -m physiotouch.train` calls `run_training`; the run folder's files are `physiotouch.run_folder.RunDir`'s.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from physiotouch.checkpoints.format import check_resumable
from physiotouch.checkpoints.lightning_io import AtomicCheckpointIO
from physiotouch.checkpoints.weights import load_weights_into
from physiotouch.cli import ConfigError
from physiotouch.data import TactileDataModule, build_datamodule
from physiotouch.preflight import preflight
from physiotouch.run_folder import RunDir, RunFolderError, trained_epochs
from physiotouch.search.pruning import ReportToTrial, search_callbacks
from physiotouch.utils.devices import auto_precision
from physiotouch.utils.files import remove_stale_temps
from physiotouch.utils.hydra_runtime import print_config, task_overrides
from physiotouch.utils.locks import FolderLock
from physiotouch.utils.plain import to_plain
from physiotouch.utils.provenance import run_info

from .callbacks import EpochSummary, InjectNaN
from .health import check_health, format_health
from .loggers import ResumableCSVLogger, configure_wandb, instantiate_loggers
from .module import PretrainModule

log = logging.getLogger("physiotouch.train")


@dataclass
class Built:
    run: RunDir
    datamodule: TactileDataModule
    module: PretrainModule
    trainer: L.Trainer
    ckpt_path: str | None  # the checkpoint the fit resumes from, if any


def run_training(cfg: DictConfig) -> dict:
    """Train once as configured (a config `config_checks.validate_train_config` has checked: the train command does).
    Returns {metric, health, output_dir, best_checkpoint, history, summary}."""
    run = RunDir(Path(cfg.paths.output_dir))
    preflight(run.path, cfg.preflight.min_free_disk_mb)
    if rank_zero_only.rank != 0:  # DDP's other ranks: rank zero holds the folder
        return _train(cfg, run)
    with FolderLock(run / RunDir.LOCK, "run folder"):  # a dead holder's lock is taken over (and said)
        for folder in (run.path, run.checkpoints):
            for tmp in remove_stale_temps(folder):
                log.info("removed %s, left by a killed write", tmp)
        return _train(cfg, run)


def _train(cfg: DictConfig, run: RunDir) -> dict:
    if (cfg.get("extras") or {}).get("print_config") and rank_zero_only.rank == 0:
        print_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    built = build(cfg, run)
    if not built.ckpt_path and not cfg.trainer.get("fast_dev_run"):
        # The untrained model's validation objective: the learning curve's first point (epoch -1).
        initial = built.trainer.validate(built.module, datamodule=built.datamodule, verbose=False)[0]
        built.module.history.append({"epoch": -1.0, **{k: float(v) for k, v in initial.items()
                                                       if k.startswith("val/")}})
    built.trainer.fit(built.module, datamodule=built.datamodule, ckpt_path=built.ckpt_path)
    result = write_run_outputs(cfg, built)
    if rank_zero_only.rank == 0:
        print_summary(result, cfg)
    return result


def build(cfg: DictConfig, run: RunDir) -> Built:
    """The data, the LightningModule and the trainer; writes the resolved config, splits.json and run_info.json."""
    ckpt_path = resume_checkpoint(cfg, run.path)
    resume_from = check_resumable(ckpt_path, to_plain(cfg.model), cfg.trainer.max_epochs) if ckpt_path else None
    # The resolved config, whatever launched the run (evaluation and release read the data and split from it).
    _write(run, RunDir.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    datamodule = build_datamodule(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    _write_json(run, RunDir.SPLITS, datamodule.record)
    module = PretrainModule(model_cfg=to_plain(cfg.model), loss_cfg=to_plain(cfg.loss), optim_cfg=to_plain(cfg.optim),
                            augment_cfg=to_plain(cfg.augment), seed=cfg.seed, batch_size=cfg.data.batch_size,
                            max_epochs=cfg.trainer.max_epochs, val_mask_ratio=cfg.validation.mask_ratio)
    module.run_id = _run_id(run, ckpt_path)
    if cfg.get("init_from"):
        load_weights_into(module.model, cfg.init_from)
    trainer = build_trainer(cfg, run.path, resume_from)
    info = run_info(cfg.seed, datamodule.record["data_version"], task_overrides(), str(run.path))
    info["precision"], info["run_id"], info["tags"] = str(cfg.trainer.precision), module.run_id, list(cfg.tags)
    _write_json(run, RunDir.RUN_INFO, info)
    return Built(run, datamodule, module, trainer, ckpt_path)


def build_trainer(cfg: DictConfig, output_dir: Path, resume_from: tuple[int, int, dict] | None = None) -> L.Trainer:
    loggers = instantiate_loggers(cfg)
    if not any(isinstance(lg, CSVLogger) for lg in loggers):  # the CSV logger is always on
        loggers.append(ResumableCSVLogger(save_dir=str(output_dir), name="csv", version=""))
    for lg in loggers:
        if isinstance(lg, ResumableCSVLogger):
            lg.resume_from = resume_from
    configure_wandb(loggers, cfg)
    callbacks = [EpochSummary()] + [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    callbacks += search_callbacks(cfg.optimized_metric)  # inside a search: report to the trial, stop when pruned
    if (cfg.get("fault_injection") or {}).get("nan_at_step") is not None:
        callbacks.append(InjectNaN(cfg.fault_injection.nan_at_step))
    resolve_precision(cfg.trainer)
    plugins = [AtomicCheckpointIO(), *cluster_plugins()]
    return hydra.utils.instantiate(cfg.trainer, logger=loggers, callbacks=callbacks, plugins=plugins,
                                   accumulate_grad_batches=cfg.optim.accum_iter,
                                   gradient_clip_val=cfg.optim.grad_clip or None,  # 0 or null: no clipping
                                   _convert_="partial")


def write_run_outputs(cfg: DictConfig, built: Built) -> dict:
    """After the fit: history, health, the optional evaluation, the summary; the summary to every logger."""
    run, module, trainer = built.run, built.module, built.trainer
    history = module.history
    _write_json(run, RunDir.HISTORY, history, indent=1)
    best_cb = next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None) == "val/objective"), None)
    eval_metrics = {}
    if cfg.get("evaluate_after_training") and best_cb and best_cb.best_model_path:
        eval_metrics = evaluate_best(cfg, best_cb.best_model_path, built.datamodule, run)
    health = check_health(history, module.loss_cfg)
    _write_json(run, RunDir.HEALTH, health)
    metric = best_value(history, cfg.optimized_metric, cfg.optimized_metric_mode)
    if metric is None and cfg.optimized_metric in eval_metrics:
        metric = float(eval_metrics[cfg.optimized_metric])
    val = [r for r in trained_epochs(history) if "val/objective" in r]
    best_row = min(val, key=lambda r: r["val/objective"]) if val else {}
    summary = {"summary/best_epoch": best_row.get("epoch", float("nan")),
               "summary/best_loss": best_row.get("val/objective", float("nan")),
               "summary/best_train_loss": module.best_train_loss, "summary/total_time_seconds": module.elapsed()}
    for lg in trainer.loggers:
        lg.log_metrics({**summary, **eval_metrics}, step=trainer.global_step)
        lg.save()
    pruned_at = next((c.pruned_at for c in trainer.callbacks if isinstance(c, ReportToTrial)), None)
    result = {"metric": metric, "health": health, "output_dir": str(run.path), "history": history,
              "best_checkpoint": best_cb.best_model_path if best_cb else None, "summary": summary}
    _write_json(run, RunDir.SUMMARY, {**summary, "best_checkpoint": run.relative(result["best_checkpoint"]),
                                      "optimized_metric": cfg.optimized_metric, "optimized_value": metric,
                                      "health": health["overall"], "pruned_at_epoch": pruned_at})
    return result


def evaluate_best(cfg: DictConfig, ckpt: str, datamodule, run: RunDir) -> dict:
    """The evaluation (probes, errors, pictures) of the best checkpoint, into RUN/eval/."""
    from physiotouch.checkpoints.format import load_model
    from physiotouch.evaluation.fit_worker import started
    from physiotouch.evaluation.run import run_evaluation
    from physiotouch.evaluation.settings import EvalConfig
    from physiotouch.utils.settings import build_settings

    settings = build_settings(EvalConfig, cfg.eval, "eval")
    with started(settings.fit_process) as worker:
        model, _ = load_model(ckpt)
        return run_evaluation(model, datamodule, settings, run.eval_dir, worker)


def best_value(history: list[dict], key: str, mode: str) -> float | None:
    values = [r[key] for r in trained_epochs(history) if key in r and math.isfinite(r[key])]
    if not values:
        return None
    return min(values) if mode == "min" else max(values)


def resolve_precision(trainer_cfg: DictConfig) -> None:
    if trainer_cfg.get("precision") != "auto":
        return
    trainer_cfg.precision = auto_precision(trainer_cfg.get("accelerator"))


def resume_checkpoint(cfg: DictConfig, output_dir: Path) -> str | None:
    """`ckpt_path`: a file, "last" (this folder's own last.ckpt, if any), or None. A fresh start into a folder
    that already holds a run is refused: it would overwrite that run's files."""
    run = RunDir(output_dir)
    ckpt_path = cfg.get("ckpt_path")
    last = run.last_checkpoint
    if not ckpt_path and requeued():
        ckpt_path = "last"  # the cluster restarted this job after a timeout or preemption: continue it
    if ckpt_path == "last":  # restart after a kill or preemption: resume if this run folder has a last.ckpt
        ckpt_path = str(last) if last.is_file() else None
        log.info("ckpt_path=last: %s", f"resuming from {last}" if ckpt_path else "no last.ckpt yet, starting fresh")
    elif not ckpt_path and (last.is_file() or run.has(RunDir.SUMMARY)):
        held = f"{RunDir.CHECKPOINTS}/{RunDir.LAST}" if last.is_file() else RunDir.SUMMARY
        raise ConfigError(f"run folder '{output_dir}' already holds a run ({held}); resume it with ckpt_path=last, "
                          f"or choose a new hydra.run.dir")
    return str(ckpt_path) if ckpt_path else None


def requeued() -> bool:
    """A SLURM job started again by a requeue (submitit's, after a timeout or preemption) sees a restart count."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


def cluster_plugins() -> list:
    """Under SLURM, submitit alone requeues a job (hydra/launcher=slurm: max_num_timeout): Lightning's own
    auto-requeue would answer the same signal a second time, so it is turned off."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def _run_id(run: RunDir, ckpt_path: str | None) -> str:
    """The id stamped into every checkpoint of this run folder (finalize checks it); kept across resumes."""
    if ckpt_path and run.has(RunDir.RUN_INFO):
        try:
            return str(run.run_info()["run_id"])
        except (RunFolderError, KeyError, TypeError):
            pass
    return uuid.uuid4().hex


def _write(run: RunDir, name: str, text: str) -> None:
    """Run files are written by the global rank-zero process only (DDP starts one process per device)."""
    if rank_zero_only.rank == 0:
        run.write_text(name, text)


def _write_json(run: RunDir, name: str, obj, indent: int = 2) -> None:
    if rank_zero_only.rank == 0:
        run.write_json(name, obj, indent)


def print_summary(result: dict, cfg: DictConfig) -> None:
    run = RunDir(Path(result["output_dir"]))
    first = next((r["val/objective"] for r in result["history"] if "val/objective" in r), None)
    lines = [f"run folder:   {run.path}", f"checkpoints:  {run.checkpoints} (best: {result['best_checkpoint'] or '-'})",
             f"metrics:      {run / RunDir.METRICS_CSV}", f"config:       {run / RunDir.CONFIG}",
             f"health:       {run / RunDir.HEALTH}", format_health(result["health"])]
    best = result["summary"]["summary/best_loss"]
    if first is not None and math.isfinite(best):
        lines.append(f"val/objective: first {first:.4f} -> best {best:.4f} (epoch "
                     f"{int(result['summary']['summary/best_epoch'])}), {100 * (first - best) / first:.1f}% lower")
    lines.append(f"{cfg.optimized_metric} (returned to sweepers): {result['metric']}")
    print("\n".join(lines), flush=True)
