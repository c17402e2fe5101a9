"""Lightning callbacks the library does not ship: the epoch summary hook, and a fault injection for tests.
(Atomic checkpoint writes and safe reads: `physiotouch.checkpoints.lightning_io.AtomicCheckpointIO`.)"""

from __future__ import annotations

import lightning as L


class EpochSummary(L.Callback):
    """Computes the reference's `epoch/*` metrics at the end of each training epoch.

    A callback rather than the module's own `on_train_epoch_end`: Lightning runs callbacks' hooks before the
    module's and the checkpoint callbacks last, so the epoch's summary is part of the checkpoint saved that epoch
    (and a resumed run's history is complete).
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.summarize_epoch()


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
