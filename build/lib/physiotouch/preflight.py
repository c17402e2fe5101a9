"""Before any work (and before Hydra opens its log file there): the output folder and its `checkpoints/` are
writable and the disk has room, so no run dies at its first checkpoint and a read-only folder gets one line.

`PreflightCallback` is a Hydra callback (physiotouch/conf/hydra/default.yaml): `on_run_start` / `on_multirun_start` run
before Hydra configures logging into the run folder, which is where a read-only folder used to fail first.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from physiotouch.cli import EnvironmentProblem, report
from physiotouch.run_folder import RunDir


class PreflightError(EnvironmentProblem):
    """The run cannot start: its output folder is not writable or the disk is (nearly) full."""


def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise PreflightError(f"output folder '{folder}' is not writable ({err.strerror}); fix its permissions or "
                             f"choose another with hydra.run.dir=DIR") from None


def preflight(output_dir: Path, min_free_mb: float) -> None:
    _writable(output_dir)
    checkpoints = RunDir(output_dir).checkpoints
    if checkpoints.exists() and not checkpoints.is_dir():
        raise PreflightError(f"'{checkpoints}' is not writable: it is a file, not a folder; move it away")
    if checkpoints.is_dir():  # a resumed or restarted run writes its checkpoints there
        _writable(checkpoints)
    free_mb = shutil.disk_usage(output_dir).free / 2**20
    if free_mb < min_free_mb:
        raise PreflightError(f"only {free_mb:.0f} MiB free under '{output_dir}', below preflight.min_free_disk_mb="
                             f"{min_free_mb:g}; free some space or write elsewhere (hydra.run.dir=DIR)")


def _check(config: DictConfig, key: str) -> None:
    try:
        folder = OmegaConf.select(config, key)
        min_free = OmegaConf.select(config, "preflight.min_free_disk_mb", default=0) or 0
        if folder:
            preflight(Path(str(folder)), float(min_free))
    except PreflightError as err:
        sys.exit(report(err))  # SystemExit passes through Hydra's error printing: one line, no traceback


class PreflightCallback(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _check(config, "hydra.sweep.dir")
