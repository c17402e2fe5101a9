"""Lightning pieces the library does not ship: the epoch summary hook, atomic checkpoint writes, safe reads, and a
fault injection for tests."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from physiotouch.checkpoints import atomic_torch_save
from physiotouch.utils.safe_load import safe_torch_load


class EpochSummary(L.Callback):
    """Computes the reference's `epoch/*` metrics at the end of each training epoch.

    A callback rather than the module's own `on_train_epoch_end`: Lightning runs callbacks' hooks before the
    module's and the checkpoint callbacks last, so the epoch's summary is part of the checkpoint saved that epoch
    (and a resumed run's history is complete).
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.summarize_epoch()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints to a temporary file and renames it (a kill while saving never corrupts `last.ckpt`);
    reads them with `weights_only=True` (a checkpoint cannot run code)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return safe_torch_load(path, map_location=map_location or "cpu")


class InjectNaN(L.Callback):
    """`fault_injection.nan_at_step=N` (tests): from optimiser step N on, the decoder's last block outputs NaN, so
    the loss turns non-finite the way a diverging run's does, and the run's own guard handles it. A forward hook,
    so the training step carries no test-only code."""

    def __init__(self, at_step: int):
        self.at_step, self.handle = int(at_step), None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        def poison(module, inputs, output):
            return output * float("nan") if trainer.training and trainer.global_step >= self.at_step else output

        self.handle = pl_module.model.decoder_blocks[-1].register_forward_hook(poison)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.handle is not None:
            self.handle.remove()
