"""PretrainModule: the reference's training program as a LightningModule.

Randomness: every training batch draws its augmentation, its masking noise and (alternating mode) its
static/dynamic coin from a generator seeded by (seed, epoch, batch index), not from the global RNG. The data order
depends only on (seed, epoch) too (the datamodule's sampler). So a run resumed from `last.ckpt` repeats exactly
what an uninterrupted run does. Validation masks are seeded by the clip alone: the same mask for every run,
seed and scheme, so `val/objective` is comparable across all of them.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch

from physiotouch.checkpoints.format import FORMAT
from physiotouch.cli import DIVERGED, UserError
from physiotouch.data.augment import augment_clips, normalize, to_float_clips
from physiotouch.data.settings import AugmentConfig
from physiotouch.models import build_model
from physiotouch.utils.settings import build_settings

from .balancing import build_balancer
from .epoch_stats import EpochStats, batch_metrics, epoch_means
from .optim import base_lr, build_optimizer, lr_at
from .schemes import build_scheme
from .settings import LossConfig, OptimConfig


class NonFiniteLossError(UserError):
    """Training hit a NaN/Inf loss; the message names the checkpoint of the last good state."""

    exit_code = DIVERGED


def _mix(*values: int) -> int:
    """A 63-bit seed from a few integers (splitmix-style), so nearby (epoch, batch) pairs get unrelated streams."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class PretrainModule(L.LightningModule):
    def __init__(self, model_cfg: dict, loss_cfg: dict, optim_cfg: dict, augment_cfg: dict | None = None,
                 seed: int = 0, batch_size: int = 8, max_epochs: int = 100, val_mask_ratio: float | None = None):
        super().__init__()
        # Plain dicts only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters()
        self.model = build_model(**model_cfg)
        self.loss_cfg = build_settings(LossConfig, loss_cfg, "loss")
        self.balancer = build_balancer(self.loss_cfg)  # an nn.Module: its state is saved in every checkpoint
        self.scheme = build_scheme(self.loss_cfg, self.balancer, self.model)
        self.optim_cfg = build_settings(OptimConfig, optim_cfg, "optim")
        self.augment_cfg = build_settings(AugmentConfig, augment_cfg, "augment")
        self.seed, self.batch_size, self.max_epochs = int(seed), int(batch_size), int(max_epochs)
        self.val_mask_ratio = self.model.cfg.mask_ratio if val_mask_ratio is None else float(val_mask_ratio)
        # Parameters the scheme never trains are frozen, so DDP needs no unused-parameter search.
        for module in self.model.unused_modules(self.scheme.paths):
            module.requires_grad_(False)
        # model.compile: the training forward passes through torch.compile (compiled on first use; the weights and
        # their names are the model's own, so checkpoints do not change).
        compile_ = torch.compile if self.model.cfg.compile else (lambda fn: fn)
        self._passes = {"video": compile_(self.model.forward_video), "image": compile_(self.model.forward_image)}
        self.run_id: str | None = None  # stamped into every checkpoint: finalize checks a checkpoint is the run's own
        self.history: list[dict[str, float]] = []  # one row per finished epoch (and the initial validation)
        self.best_train_loss = math.inf
        self.elapsed_before = 0.0  # seconds trained before the last resume
        self._fit_start = None
        self.epoch_stats = EpochStats()

    # ------------------------------------------------------------------------------------------------------------
    # optimisation
    @property
    def peak_lr(self) -> float:
        return base_lr(self.optim_cfg, self.batch_size, self.trainer.world_size if self._trainer else 1)

    def configure_optimizers(self):
        learned = list(self.balancer.parameters())  # uncertainty / gradnorm: own group, no decay, constant rate
        extra = [{"params": learned, "weight_decay": 0.0, "lr": self.loss_cfg.balancer_lr, "fixed_lr": True}]
        return build_optimizer(self.model, self.optim_cfg, self.peak_lr, extra if learned else [])

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # After backward and the optimiser step (Lightning 2 zeroes gradients between training_step and backward,
        # so on_before_zero_grad would change the weights under a live graph): GradNorm renormalises here.
        self.balancer.after_step()

    def current_lr(self, batch_idx: int) -> float:
        steps = max(1, self.trainer.num_training_batches)
        epoch_float = self.current_epoch + batch_idx / steps
        return lr_at(epoch_float, self.peak_lr, self.optim_cfg.min_lr, self.optim_cfg.warmup_epochs, self.max_epochs)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if batch_idx % self.optim_cfg.accum_iter == 0:  # the reference sets the rate every accum_iter data steps
            lr = self.current_lr(batch_idx)
            for group in self.optimizers().optimizer.param_groups:
                if not group.get("fixed_lr"):
                    group["lr"] = lr

    # ------------------------------------------------------------------------------------------------------------
    # batches
    def _generator(self, batch_idx: int, device: torch.device) -> torch.Generator:
        gen = torch.Generator(device=device)
        gen.manual_seed(_mix(self.seed, self.current_epoch, batch_idx))
        return gen

    def prepare_clips(self, batch: dict, train: bool, gen: torch.Generator | None = None) -> torch.Tensor:
        """uint8 [B, 4, S, S, 3] -> normalised float [B, 4, 3, S, S] (augmented when training)."""
        clips = to_float_clips(batch["clip"])
        if train:
            clips = augment_clips(clips, self.augment_cfg, gen)
        return normalize(clips)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        gen = self._generator(batch_idx, self.device)  # augmentation, mask and coin: from (seed, epoch, batch)
        clips = self.prepare_clips(batch, True, gen)  # [B, 4, 3, S, S], augmented and normalised
        noise = torch.rand(clips.shape[0], self.model.num_patches, device=self.device, generator=gen)  # [B, L]
        step = self.scheme.step(self._passes, clips, noise, gen)  # joint or alternating: the training loss
        self._guard_finite(step.total, batch_idx)
        self.log_dict({**batch_metrics(step), **self._position(batch_idx)}, on_step=True, on_epoch=False,
                      batch_size=clips.shape[0])
        self.epoch_stats.add(step)
        return step.total

    def _position(self, batch_idx: int) -> dict[str, float]:
        """Where in training this batch is: the rate in force, the fractional epoch and the iteration."""
        steps = self.trainer.num_training_batches
        return {"batch/lr": self.optimizers().optimizer.param_groups[0]["lr"],
                "batch/epoch": float(self.current_epoch) + batch_idx / max(1, steps),
                "batch/iteration": float(self.current_epoch * steps + batch_idx)}

    def _guard_finite(self, total: torch.Tensor, batch_idx: int) -> None:
        bad = not bool(torch.isfinite(total.detach()))
        if not self.trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        # The weights still hold the state after the last good optimiser step: save it before stopping.
        path = None
        if all(torch.isfinite(p).all() for p in self.model.parameters()):
            best = self.trainer.checkpoint_callback  # beside the run's other checkpoints
            ckpt_dir = (best.dirpath if best is not None and best.dirpath else None) or self.trainer.default_root_dir
            path = f"{ckpt_dir}/nonfinite-last-good.ckpt"
            self.trainer.save_checkpoint(path)
        where = f"epoch {self.current_epoch}, batch {batch_idx}, optimiser step {self.global_step}"
        saved = (f"the last good state was saved to {path}" if path else
                 "the weights are already non-finite, so no checkpoint was saved; resume from last.ckpt")
        raise NonFiniteLossError(f"non-finite training loss at {where}: {saved}. Lower the learning rate "
                                 f"(optim.blr / optim.lr), enable optim.grad_clip, or use trainer precision 32.")

    # ------------------------------------------------------------------------------------------------------------
    # validation: the same objective for every scheme, with a fixed mask per clip
    def fixed_noise(self, clip_ids: torch.Tensor) -> torch.Tensor:
        return self.model.fixed_mask_noise(clip_ids, self.model.num_patches).to(self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        clips = self.prepare_clips(batch, False)
        noise = self.fixed_noise(batch["clip_id"])
        out = self.model.forward_video(clips, noise, mask_ratio=self.val_mask_ratio)
        b = clips.shape[0]
        metrics = {f"val/{k}": out[k] for k in ("loss_static", "loss_recon", "loss_pred", "loss_dynamic")}
        metrics["val/objective"] = self.model.objective(out)
        if "image" in self.scheme.paths:  # what the static batches of the alternating scheme train
            image = self.model.forward_image(clips, noise, mask_ratio=self.val_mask_ratio)
            metrics["val/loss_static_image"] = image["loss_static"]
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=b, sync_dist=True)

    # ------------------------------------------------------------------------------------------------------------
    # epochs (summarised by EpochSummary, which runs before the checkpoint callbacks save)
    def summarize_epoch(self) -> dict[str, float]:
        sums = self.epoch_stats.take(lambda v: self.trainer.strategy.reduce(v, reduce_op="sum"))
        row = {"epoch": float(self.current_epoch), **epoch_means(sums, joint=self.scheme.joint)}
        if "epoch/train_loss" in row:
            self.best_train_loss = min(self.best_train_loss, row["epoch/train_loss"])
            row.update({"epoch/best_loss_so_far": self.best_train_loss,
                        "epoch/lr": self.optimizers().optimizer.param_groups[0]["lr"]})
        self.log_dict({k: v for k, v in row.items() if k != "epoch"}, on_step=False, on_epoch=True)
        row.update(self.val_metrics())
        self.history.append(row)
        return row

    def val_metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}

    def on_fit_start(self) -> None:
        self._fit_start = time.time()

    def elapsed(self) -> float:
        return self.elapsed_before + (time.time() - self._fit_start if self._fit_start else 0.0)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["format"] = FORMAT
        checkpoint["physiotouch"] = {"history": self.history, "best_train_loss": self.best_train_loss,
                                     "elapsed_seconds": self.elapsed(), "run_id": self.run_id}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("physiotouch", {})
        self.history = list(state.get("history", []))
        self.best_train_loss = float(state.get("best_train_loss", math.inf))
        self.elapsed_before = float(state.get("elapsed_seconds", 0.0))
