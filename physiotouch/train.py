"""python -m physiotouch.train: one pretraining run (or, with -m, one job of a sweep).

Writes into its run folder: `.hydra/` (the resolved config), `run_info.json`, `splits.json`, `csv/metrics.csv`,
`checkpoints/` (best by val/objective, last, periodic), `health.json`; returns `optimized_metric` to sweepers.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import tempfile
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from physiotouch.config import register_resolvers, to_plain
from physiotouch.data import DataError
from physiotouch.training.callbacks import AtomicCheckpointIO, EpochSummary
from physiotouch.training.health import check_health, format_health
from physiotouch.training.loggers import configure_wandb, finish_wandb
from physiotouch.training.module import NonFiniteLossError, PretrainModule
from physiotouch.training.run_info import run_info
from physiotouch.utils.safe_load import CheckpointError

log = logging.getLogger("physiotouch.train")


class PreflightError(RuntimeError):
    """The run cannot start: its output folder is not writable or the disk is (nearly) full."""


# Errors a user can cause: reported in one line, no traceback; a sweep records the job as failed and goes on.
USER_ERRORS = (DataError, CheckpointError, NonFiniteLossError, PreflightError, ValueError)


def preflight(output_dir: Path, min_free_mb: float) -> None:
    """Before any work: the output folder is writable and has room (no run dies at its first checkpoint)."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write-test-"):
            pass
    except OSError as err:
        raise PreflightError(f"output folder '{output_dir}' is not writable ({err.strerror}); choose another with "
                             f"hydra.run.dir=DIR (or paths.log_dir=DIR)") from None
    free_mb = shutil.disk_usage(output_dir).free / 2**20
    if free_mb < min_free_mb:
        raise PreflightError(f"only {free_mb:.0f} MiB free under '{output_dir}', below preflight.min_free_disk_mb="
                             f"{min_free_mb:g}; free some space or write elsewhere (hydra.run.dir=DIR)")


def resolve_precision(trainer_cfg: DictConfig) -> None:
    if trainer_cfg.get("precision") != "auto":
        return
    cuda = torch.cuda.is_available() and trainer_cfg.get("accelerator") in ("auto", "gpu", "cuda")
    trainer_cfg.precision = ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed") if cuda else "32-true"


def load_initial_weights(module: PretrainModule, path: str) -> None:
    """`init_from`: a physiotouch checkpoint or a reference best.pth/last.pth, into the configured model."""
    from physiotouch.checkpoints import load_checkpoint, model_state_from
    from physiotouch.legacy import load_state_into
    from physiotouch.utils.safe_load import safe_torch_load

    raw = safe_torch_load(path, allow_namespace=True)
    if isinstance(raw, dict) and "state_dict" in raw:
        state = model_state_from(load_checkpoint(path))
        missing, unexpected = module.model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"init_from '{path}' does not fit model config: missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]}; pick the model=... it was trained with")
    else:
        load_state_into(module.model, raw["model"] if "model" in raw else raw, path)
    log.info("initial weights from %s", path)


def build_trainer(cfg: DictConfig, output_dir: Path) -> L.Trainer:
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values()]
    if not any(isinstance(lg, CSVLogger) for lg in loggers):  # the CSV logger is always on
        loggers.append(CSVLogger(save_dir=str(output_dir), name="csv", version=""))
    configure_wandb(loggers, cfg)
    callbacks = [EpochSummary()] + [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    resolve_precision(cfg.trainer)
    return hydra.utils.instantiate(cfg.trainer, logger=loggers, callbacks=callbacks, plugins=[AtomicCheckpointIO()],
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
    from physiotouch.checkpoints import load_model
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
    output_dir = Path(cfg.paths.output_dir)
    preflight(output_dir, cfg.preflight.min_free_disk_mb)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    # The resolved config, whatever launched the run (evaluation and release read the data and split from it).
    _write(output_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    _write(output_dir / "splits.json", json.dumps(datamodule.record, indent=2))

    module = PretrainModule(model_cfg=to_plain(cfg.model), loss_cfg=to_plain(cfg.loss), optim_cfg=to_plain(cfg.optim),
                            augment_cfg=to_plain(cfg.augment), seed=cfg.seed, batch_size=cfg.data.batch_size,
                            max_epochs=cfg.trainer.max_epochs, val_mask_ratio=cfg.validation.mask_ratio,
                            debug={**to_plain(cfg.debug), "checkpoint_dir": str(output_dir / "checkpoints")})
    if cfg.get("init_from"):
        load_initial_weights(module, cfg.init_from)
    trainer = build_trainer(cfg, output_dir)
    overrides = []
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # composed outside a Hydra app (tests)
        pass
    info = run_info(cfg.seed, datamodule.record["data_version"], overrides, str(output_dir))
    info["precision"] = str(cfg.trainer.precision)
    _write(output_dir / "run_info.json", json.dumps(info, indent=2))

    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":  # restart after a kill or preemption: resume if this run folder has a last.ckpt
        last = output_dir / "checkpoints" / "last.ckpt"
        ckpt_path = str(last) if last.is_file() else None
        log.info("ckpt_path=last: %s", f"resuming from {last}" if ckpt_path else "no last.ckpt yet, starting fresh")
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
    result = {"metric": metric, "health": health, "output_dir": str(output_dir), "history": history,
              "best_checkpoint": best_cb.best_model_path if best_cb else None, "summary": summary}
    _write(output_dir / "summary.json", json.dumps(
        {**summary, "best_checkpoint": result["best_checkpoint"], "optimized_metric": cfg.optimized_metric,
         "optimized_value": metric, "health": health["overall"]}, indent=2))
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
        user_error = isinstance(err, USER_ERRORS)
        if not (user_error or sweeping):
            raise
        if user_error:
            log.error("%s: %s", type(err).__name__, err)
        else:
            log.exception("job failed")  # the traceback goes to this job's log file
        print(f"error: {err}", file=sys.stderr, flush=True)
        if sweeping:
            # One failed job must not end the sweep: the sweeper records the job as failed (with this reason).
            status = Path(cfg.paths.output_dir) / "status.json"
            status.write_text(json.dumps({"status": "failed", "reason": f"{type(err).__name__}: {err}"}))
            return None
        sys.exit(1)
    finally:
        finish_wandb()


register_resolvers()  # before @hydra.main composes the config

if __name__ == "__main__":
    main()
