"""Writing checkpoints so that a kill never leaves half a file. (Kept free of Lightning, whose import takes
seconds: scripts that only save import this alone; `lightning_io` gives Lightning the same writes.)"""

from __future__ import annotations

from pathlib import Path

import torch

from physiotouch.utils.files import atomic_write


def atomic_torch_save(obj, path: str | Path) -> None:
    """torch.save through a temporary file and a rename: a kill never leaves half a checkpoint."""
    atomic_write(path, lambda fh: torch.save(obj, fh))
