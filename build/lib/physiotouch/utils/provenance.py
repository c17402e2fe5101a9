"""`run_info.json`: what is needed to say later exactly how a run was made."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from physiotouch.paths import REPO_DIR


def git_state(repo: Path = REPO_DIR) -> dict:
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def environment() -> dict:
    import lightning

    cuda = torch.cuda.is_available()
    driver = None
    if cuda and shutil.which("nvidia-smi"):
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            driver = None
    return {
        "python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
        "lightning": lightning.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()
        if cuda else None, "driver": driver,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else
        [platform.processor() or platform.machine() or "cpu"],
        "cpu_count": os.cpu_count(),
        "host": platform.node(), "pid": os.getpid(),  # which machine and process ran it (searches, clusters)
    }


def run_info(seed: int, data_version: str, overrides: list[str], output_dir: str) -> dict:
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "argv": sys.argv,
        "overrides": overrides,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "git": git_state(),
        "environment": environment(),
        "data_version": data_version,
        "output_dir": output_dir,
    }
