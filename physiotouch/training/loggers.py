"""Logger set-up beyond what the logger configs say: W&B's step metrics, tags and the run's config."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


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
        stage = (cfg.get("search") or {}).get("stage")
        if stage:
            run.tags = tuple(run.tags or ()) + (f"search={stage}",)
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        # The reference's panels: batch metrics against the iteration, epoch and validation metrics per epoch.
        run.define_metric("batch/iteration")
        run.define_metric("batch/*", step_metric="batch/iteration")
        run.define_metric("epoch")
        for prefix in ("epoch/*", "val/*"):
            run.define_metric(prefix, step_metric="epoch")
