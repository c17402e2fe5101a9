"""Writing checkpoints so that a kill never leaves half a file, and reading them only safely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from physiotouch.utils.files import atomic_write

from .safe_load import safe_torch_load


def atomic_torch_save(obj, path: str | Path) -> None:
    """torch.save through a temporary file and a rename: a kill never leaves half a checkpoint."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints to a temporary file and renames it (a kill while saving never corrupts `last.ckpt`);
    reads them with `weights_only=True` (a checkpoint cannot run code)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return safe_torch_load(path, map_location=map_location or "cpu")
