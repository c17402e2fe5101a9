"""python -m physiotouch.train: one pretraining run (or, with -m, one job of a sweep).

Writes into its run folder: `.hydra/` (the resolved config), `run_info.json`, `splits.json`, `csv/metrics.csv`,
`checkpoints/` (best by val/objective, last, periodic), `health.json`; returns `optimized_metric` to sweepers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import uuid
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from physiotouch import run_folder
from physiotouch.checkpoints.format import check_resumable
from physiotouch.checkpoints.io import AtomicCheckpointIO
from physiotouch.checkpoints.weights import load_weights_into
from physiotouch.cli import ConfigError, as_user_error, report
from physiotouch.config_checks import validate_train_config
from physiotouch.data import build_datamodule
from physiotouch.hydra_setup import register_resolvers
from physiotouch.preflight import preflight
from physiotouch.search.pruning import ReportToTrial, search_callbacks
from physiotouch.training.callbacks import EpochSummary, InjectNaN
from physiotouch.training.health import check_health, format_health
from physiotouch.training.loggers import ResumableCSVLogger, configure_wandb, finish_wandb
from physiotouch.training.module import PretrainModule
from physiotouch.utils.files import remove_stale_temps
from physiotouch.utils.locks import FolderLock
from physiotouch.utils.plain import to_plain
from physiotouch.utils.provenance import run_info

log = logging.getLogger("physiotouch.train")


def resolve_precision(trainer_cfg: DictConfig) -> None:
    if trainer_cfg.get("precision") != "auto":
        return
    cuda = torch.cuda.is_available() and trainer_cfg.get("accelerator") in ("auto", "gpu", "cuda")
    trainer_cfg.precision = ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed") if cuda else "32-true"


def build_trainer(cfg: DictConfig, output_dir: Path, resume_from: tuple[int, int] | None = None) -> L.Trainer:
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values()]
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


def best_value(history: list[dict], key: str, mode: str) -> float | None:
    values = [r[key] for r in history if key in r and r.get("epoch", 0) >= 0 and math.isfinite(r[key])]
    if not values:
        return None
    return min(values) if mode == "min" else max(values)


def evaluate_best(cfg: DictConfig, ckpt: str, datamodule, output_dir: Path) -> dict:
    """The evaluation (probes, errors, pictures) of the best checkpoint, into RUN/eval/."""
    from physiotouch.checkpoints.format import load_model
    from physiotouch.evaluation.run import eval_config, run_evaluation

    model, _ = load_model(ckpt)
    return run_evaluation(model, datamodule, eval_config(cfg.eval), output_dir / "eval")


def _write(path: Path, text: str) -> None:
    """Run files are written by the global rank-zero process only (DDP starts one process per device)."""
    if rank_zero_only.rank == 0:
        path.write_text(text)


def run_training(cfg: DictConfig) -> dict:
    """Train once as configured. Returns {metric, health, output_dir, best_checkpoint, history}."""
    register_resolvers()
    validate_train_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    preflight(output_dir, cfg.preflight.min_free_disk_mb)
    if rank_zero_only.rank != 0:  # DDP's other ranks: rank zero holds the folder
        return _train(cfg, output_dir)
    with FolderLock(output_dir / run_folder.LOCK, "run folder"):  # a dead holder's lock is taken over (and said)
        for folder in (output_dir, output_dir / run_folder.CHECKPOINTS):
            for tmp in remove_stale_temps(folder):
                log.info("removed %s, left by a killed write", tmp)
        return _train(cfg, output_dir)


def resume_checkpoint(cfg: DictConfig, output_dir: Path) -> str | None:
    """`ckpt_path`: a file, "last" (this folder's own last.ckpt, if any), or None. A fresh start into a folder
    that already holds a run is refused: it would overwrite that run's files."""
    ckpt_path = cfg.get("ckpt_path")
    last = output_dir / run_folder.CHECKPOINTS / "last.ckpt"
    if not ckpt_path and requeued():
        ckpt_path = "last"  # the cluster restarted this job after a timeout or preemption: continue it
    if ckpt_path == "last":  # restart after a kill or preemption: resume if this run folder has a last.ckpt
        ckpt_path = str(last) if last.is_file() else None
        log.info("ckpt_path=last: %s", f"resuming from {last}" if ckpt_path else "no last.ckpt yet, starting fresh")
    elif not ckpt_path and (last.is_file() or (output_dir / run_folder.SUMMARY).is_file()):
        held = "checkpoints/last.ckpt" if last.is_file() else run_folder.SUMMARY
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


def _run_id(output_dir: Path, ckpt_path: str | None) -> str:
    """The id stamped into every checkpoint of this run folder (finalize checks it); kept across resumes."""
    previous = output_dir / run_folder.RUN_INFO
    if ckpt_path and previous.is_file():
        try:
            return str(run_folder.read_json(previous)["run_id"])
        except (run_folder.RunFolderError, KeyError, TypeError):
            pass
    return uuid.uuid4().hex


def print_config(cfg: DictConfig) -> None:
    """The composed config as a tree, one branch per config group (`extras.print_config`)."""
    from rich import print as rich_print
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if OmegaConf.is_config(value) else f"{value}\n"
        tree.add(str(key)).add(Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default"))
    rich_print(tree)


def _train(cfg: DictConfig, output_dir: Path) -> dict:
    if (cfg.get("extras") or {}).get("print_config") and rank_zero_only.rank == 0:
        print_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt_path = resume_checkpoint(cfg, output_dir)
    resume_from = check_resumable(ckpt_path, to_plain(cfg.model), cfg.trainer.max_epochs) if ckpt_path else None

    # The resolved config, whatever launched the run (evaluation and release read the data and split from it).
    _write(output_dir / run_folder.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    datamodule = build_datamodule(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    _write(output_dir / run_folder.SPLITS, json.dumps(datamodule.record, indent=2))

    module = PretrainModule(model_cfg=to_plain(cfg.model), loss_cfg=to_plain(cfg.loss), optim_cfg=to_plain(cfg.optim),
                            augment_cfg=to_plain(cfg.augment), seed=cfg.seed, batch_size=cfg.data.batch_size,
                            max_epochs=cfg.trainer.max_epochs, val_mask_ratio=cfg.validation.mask_ratio)
    module.run_id = _run_id(output_dir, ckpt_path)
    if cfg.get("init_from"):
        load_weights_into(module.model, cfg.init_from)
    trainer = build_trainer(cfg, output_dir, resume_from)
    overrides = []
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # composed outside a Hydra app (tests)
        pass
    info = run_info(cfg.seed, datamodule.record["data_version"], overrides, str(output_dir))
    info["precision"], info["run_id"], info["tags"] = str(cfg.trainer.precision), module.run_id, list(cfg.tags)
    _write(output_dir / run_folder.RUN_INFO, json.dumps(info, indent=2))

    if not ckpt_path and not cfg.trainer.get("fast_dev_run"):
        # The untrained model's validation objective: the learning curve's first point.
        initial = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
        module.history.append({"epoch": -1.0, **{k: float(v) for k, v in initial.items() if k.startswith("val/")}})
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    history = module.history
    _write(output_dir / "history.json", json.dumps(history, indent=1))
    best_cb = next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None) == "val/objective"), None)
    eval_metrics = {}
    if cfg.get("evaluate_after_training") and best_cb and best_cb.best_model_path:
        eval_metrics = evaluate_best(cfg, best_cb.best_model_path, datamodule, output_dir)
    health = check_health(history, module.loss_cfg)
    _write(output_dir / "health.json", json.dumps(health, indent=2))
    metric = best_value(history, cfg.optimized_metric, cfg.optimized_metric_mode)
    if metric is None and cfg.optimized_metric in eval_metrics:
        metric = float(eval_metrics[cfg.optimized_metric])
    val = [r for r in history if "val/objective" in r and r.get("epoch", 0) >= 0]
    best_row = min(val, key=lambda r: r["val/objective"]) if val else {}
    summary = {"summary/best_epoch": best_row.get("epoch", float("nan")),
               "summary/best_loss": best_row.get("val/objective", float("nan")),
               "summary/best_train_loss": module.best_train_loss, "summary/total_time_seconds": module.elapsed()}
    for lg in trainer.loggers:
        lg.log_metrics({**summary, **eval_metrics}, step=trainer.global_step)
        lg.save()
    pruned_at = next((c.pruned_at for c in trainer.callbacks if isinstance(c, ReportToTrial)), None)
    result = {"metric": metric, "health": health, "output_dir": str(output_dir), "history": history,
              "best_checkpoint": best_cb.best_model_path if best_cb else None, "summary": summary}
    _write(output_dir / "summary.json", json.dumps(
        {**summary, "best_checkpoint": result["best_checkpoint"], "optimized_metric": cfg.optimized_metric,
         "optimized_value": metric, "health": health["overall"], "pruned_at_epoch": pruned_at}, indent=2))
    if rank_zero_only.rank == 0:
        _print_summary(result, cfg)
    return result


def _print_summary(result: dict, cfg: DictConfig) -> None:
    out = Path(result["output_dir"])
    first = next((r["val/objective"] for r in result["history"] if "val/objective" in r), None)
    lines = [f"run folder:   {out}", f"checkpoints:  {out / 'checkpoints'} (best: {result['best_checkpoint'] or '-'})",
             f"metrics:      {out / 'csv' / 'metrics.csv'}", f"config:       {out / 'config_resolved.yaml'}",
             f"health:       {out / 'health.json'}", format_health(result["health"])]
    best = result["summary"]["summary/best_loss"]
    if first is not None and math.isfinite(best):
        lines.append(f"val/objective: first {first:.4f} -> best {best:.4f} (epoch "
                     f"{int(result['summary']['summary/best_epoch'])}), {100 * (first - best) / first:.1f}% lower")
    lines.append(f"{cfg.optimized_metric} (returned to sweepers): {result['metric']}")
    print("\n".join(lines), flush=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return run_training(cfg)["metric"]
    except Exception as err:  # noqa: BLE001 - sorted below: user errors, then anything during a sweep
        known = as_user_error(err)
        if not (known or sweeping):
            raise
        if known:
            log.error("%s: %s", type(known).__name__, known)
        else:
            log.exception("job failed")  # the traceback goes to this job's log file
        if sweeping:
            # One failed job must not end the sweep: the sweeper records the job as failed (with this reason).
            print(f"error: {known or err}", file=sys.stderr, flush=True)
            status = Path(cfg.paths.output_dir) / "status.json"
            status.write_text(json.dumps({"status": "failed", "reason": f"{type(err).__name__}: {known or err}"}))
            return None
        sys.exit(report(known))
    finally:
        finish_wandb()


register_resolvers()  # before @hydra.main composes the config

if __name__ == "__main__":
    main()
