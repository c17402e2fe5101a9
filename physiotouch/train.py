"""python -m physiotouch.train: one pretraining run (or, with -m, one job of a sweep).

The run itself is `physiotouch.training.run.run_training`; its folder's files are `physiotouch.run_folder.RunDir`'s.
Returns `optimized_metric` to sweepers. A user error prints one line and exits with its code (`physiotouch.cli`);
inside a sweep, a failed job is recorded (status.json) and the sweep goes on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from physiotouch.cli import run_hydra_app, user_errors

log = logging.getLogger("physiotouch.train")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # Imported here, not above: `--help` and `--cfg job` compose and print without torch or Lightning.
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from physiotouch.config_checks import validate_train_config
    from physiotouch.run_folder import RunDir
    from physiotouch.training.loggers import finish_wandb
    from physiotouch.training.run import run_training

    def record_failure(reason: str) -> None:  # the sweeper reads it and records the trial as failed
        RunDir(Path(cfg.paths.output_dir)).write_json(RunDir.STATUS, {"status": "failed", "reason": reason}, None)

    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN  # one failed job must not end the sweep
    try:
        with user_errors(log, sweep_failure=record_failure if sweeping else None):
            validate_train_config(cfg)  # every key and value, before the run folder is touched
            return run_training(cfg)["metric"]
        return None
    finally:
        finish_wandb()


if __name__ == "__main__":
    run_hydra_app(main)
