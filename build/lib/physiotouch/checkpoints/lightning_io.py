"""The trainer's checkpoint IO: every write atomic (`io.atomic_torch_save`), every read safe (`safe_load`)."""

from __future__ import annotations

from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from physiotouch.utils.safe_load import safe_torch_load

from . import io as checkpoint_io


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints to a temporary file and renames it (a kill while saving never corrupts `last.ckpt`);
    reads them with `weights_only=True` (a checkpoint cannot run code)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        # Through the module, so that a test can stand in a full disk for it.
        checkpoint_io.atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return safe_torch_load(path, map_location=map_location or "cpu")
