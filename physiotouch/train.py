"""python -m physiotouch.train: one pretraining run (or, with -m, one job of a sweep).

The run itself is `physiotouch.training.run.run_training`; its folder's files are `physiotouch.run_folder.RunDir`'s.
Returns `optimized_metric` to sweepers. A user error prints one line and exits with its code (`physiotouch.cli`);
inside a sweep, a failed job is recorded (status.json) and the sweep goes on.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from physiotouch.cli import as_user_error, report
from physiotouch.hydra_setup import register_with_hydra
from physiotouch.run_folder import RunDir
from physiotouch.training.loggers import finish_wandb
from physiotouch.training.run import run_training

log = logging.getLogger("physiotouch.train")


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
            RunDir(Path(cfg.paths.output_dir)).write_json(
                RunDir.STATUS, {"status": "failed", "reason": f"{type(err).__name__}: {known or err}"}, indent=None)
            return None
        sys.exit(report(known))
    finally:
        finish_wandb()


register_with_hydra()  # before @hydra.main composes the config

if __name__ == "__main__":
    main()
