"""python -m physiotouch.evaluate ckpt_path=CKPT: what the representation is worth, where it fails, how robust it is.

Writes `eval/` beside the checkpoint's run (metrics.json, report.md, index.md, PNGs) and logs the same numbers to
the configured loggers. Train and validation splits only: the test split is read by the release command alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from physiotouch.cli import run_hydra_app, user_errors
from physiotouch.evaluation.fit_worker import FitWorker, started
from physiotouch.evaluation.settings import EvalConfig
from physiotouch.run_folder import RunDir, RunFolderError
from physiotouch.utils.settings import build_settings

log = logging.getLogger("physiotouch.evaluate")


def evaluate_checkpoint(cfg: DictConfig, settings: EvalConfig | None = None, worker: FitWorker | None = None) -> dict:
    """`settings`: cfg.eval's, built (None: built here); `worker`: the evaluation's probe-fitting process, if any
    (evaluation/fit_worker.py)."""
    # torch and Lightning here, not above: `--help` and `--cfg job` compose and print without them.
    from lightning.pytorch.loggers import CSVLogger

    from physiotouch.checkpoints.format import load_model
    from physiotouch.data.build import rebuild_run_datamodule
    from physiotouch.evaluation.run import run_evaluation
    from physiotouch.training.loggers import instantiate_loggers

    settings = settings or build_settings(EvalConfig, cfg.eval, "eval")
    ckpt = Path(cfg.ckpt_path)
    model, _ = load_model(ckpt)
    run = RunDir.of_checkpoint(ckpt)
    data_cfg, source = cfg.data, "the evaluate config"
    if run is not None and cfg.use_run_data:
        source = str(run / RunDir.CONFIG)
        data_cfg = run.config().get("data")
        if not isinstance(data_cfg, dict):
            raise RunFolderError(f"'{source}' has no data settings")
    checked = run.data_change if run is not None and run.has(RunDir.SPLITS) else None
    datamodule = rebuild_run_datamodule(data_cfg, source, "validate", checked, must_match=bool(cfg.use_run_data),
                                        image_size=model.cfg.encoder.image_size)
    out = Path(cfg.out_dir) if cfg.out_dir else (run.eval_dir if run else RunDir(cfg.paths.output_dir).eval_dir)
    if run is not None:  # one source: the masks this run validated with (its config), not the evaluate config's
        validation = run.config().get("validation")
        if isinstance(validation, dict) and isinstance(validation.get("mask_ratio"), (int, float)):
            settings.mask_ratio = float(validation["mask_ratio"])
    metrics = run_evaluation(model, datamodule, settings, out, worker)
    loggers = instantiate_loggers(cfg)
    loggers = [lg for lg in loggers if not isinstance(lg, CSVLogger)] + [CSVLogger(str(out), name="csv", version="")]
    for lg in loggers:
        lg.log_metrics(metrics, step=0)
        lg.save()
    report = (out / "report.md").read_text()
    print(f"evaluation of {ckpt} -> {out}\n" + report.split("## Pictures")[0] + report.rsplit("\n\n", 1)[-1])
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with user_errors():
        settings = build_settings(EvalConfig, cfg.eval, "eval")
    # the probe-fitting process first: its imports run while this one imports Lightning (seconds each)
    with started(settings.fit_process) as worker:
        from physiotouch.training.loggers import finish_wandb

        try:
            with user_errors():
                evaluate_checkpoint(cfg, settings, worker)
        finally:
            finish_wandb()


if __name__ == "__main__":
    run_hydra_app(main)
