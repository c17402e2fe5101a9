"""Writing checkpoints so that a kill never leaves half a file. (Kept free of Lightning, whose import takes
seconds: scripts that only save import this alone; `lightning_io` gives Lightning the same writes.)"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import torch

from physiotouch.utils.files import atomic_write


def atomic_torch_save(obj, path: str | Path) -> None:
    """torch.save through a temporary file and a rename: a kill never leaves half a checkpoint."""
    def write(fh) -> None:
        try:
            torch.save(obj, fh)
        except RuntimeError as err:  # torch's zip writer reports a failed write (a full disk) as a RuntimeError
            if "write" not in str(err).lower():
                raise
            full = _free_bytes(Path(path).parent) < 2**20
            raise OSError(errno.ENOSPC if full else errno.EIO, str(err).splitlines()[0][:120], str(path)) from None

    atomic_write(path, write)


def _free_bytes(folder: Path) -> int:
    try:
        st = os.statvfs(folder)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize
