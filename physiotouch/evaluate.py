"""python -m physiotouch.evaluate ckpt_path=CKPT: what the representation is worth, where it fails, how robust it is.

Writes `eval/` beside the checkpoint's run (metrics.json, report.md, index.md, PNGs) and logs the same numbers to
the configured loggers. Train and validation splits only: the test split is read by the release command alone.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
import yaml
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from physiotouch.checkpoints import load_model
from physiotouch.config import register_resolvers
from physiotouch.data import DataError
from physiotouch.evaluation.run import eval_config, run_evaluation
from physiotouch.training.loggers import finish_wandb
from physiotouch.utils.safe_load import CheckpointError

log = logging.getLogger("physiotouch.evaluate")


def run_dir_of(ckpt: Path) -> Path | None:
    """The training run a checkpoint belongs to (RUN/checkpoints/x.ckpt with RUN/config_resolved.yaml)."""
    run = ckpt.resolve().parent.parent
    return run if (run / "config_resolved.yaml").is_file() else None


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    register_resolvers()
    ckpt = Path(cfg.ckpt_path)
    model, _ = load_model(ckpt)
    run = run_dir_of(ckpt)
    data_cfg = cfg.data
    if run is not None and cfg.use_run_data:
        data_cfg = OmegaConf.create(yaml.safe_load((run / "config_resolved.yaml").read_text())["data"])
    with open_dict(data_cfg):
        data_cfg.image_size = model.cfg.encoder.image_size
    datamodule = hydra.utils.instantiate(data_cfg, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("validate")
    if run is not None and (run / "splits.json").is_file():
        trained = json.loads((run / "splits.json").read_text())
        differs = (trained["data_version"] != datamodule.record["data_version"] or
                   trained["groups"] != datamodule.record["groups"])
        message = (f"the data or split differ from those the checkpoint's run used ({run / 'splits.json'}): data "
                   f"version {trained['data_version']} vs {datamodule.record['data_version']}")
        if differs and cfg.use_run_data:
            raise DataError(message + "; the data changed since training")
        if differs:  # the user chose other data on purpose (use_run_data=false)
            log.warning(message)
    out = Path(cfg.out_dir) if cfg.out_dir else (run / "eval" if run else Path(cfg.paths.output_dir) / "eval")
    metrics = run_evaluation(model, datamodule, eval_config(cfg.eval), out)
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values()]
    loggers = [lg for lg in loggers if not isinstance(lg, CSVLogger)] + [CSVLogger(str(out), name="csv", version="")]
    for lg in loggers:
        lg.log_metrics(metrics, step=0)
        lg.save()
    print(f"evaluation of {ckpt} -> {out}\n" + (out / "report.md").read_text().split("## Pictures")[0])
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        evaluate_checkpoint(cfg)
    except (CheckpointError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    finally:
        finish_wandb()


register_resolvers()

if __name__ == "__main__":
    main()
