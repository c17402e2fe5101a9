"""The reference's optimiser and schedule: AdamW with decay on weights only, per-step warm-up + half-cycle cosine.

Written out (not a torch LR scheduler) because the reference sets the rate from a fractional epoch
e = epoch + step / steps_per_epoch every accum_iter data steps; reproducing that exactly is one formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from physiotouch.utils.settings import finite, require


@dataclass
class OptimConfig:
    """The `optim` config node's keys and their only defaults (experiment=reference sets the reference's 40 / 2)."""

    lr: float | None = None  # absolute rate; None: blr * effective_batch / 256 (effective = batch * accum * GPUs)
    blr: float = 1.0e-3
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_epochs: float = 2
    accum_iter: int = 1
    grad_clip: float | None = None  # max gradient norm; None = off (the reference's default)

    def validate(self) -> None:
        require(finite(self.blr) and self.blr > 0, "optim.blr", self.blr, "a finite number > 0")
        require(self.lr is None or (finite(self.lr) and self.lr > 0), "optim.lr", self.lr,
                "null or a finite number > 0")
        require(finite(self.min_lr) and self.min_lr >= 0, "optim.min_lr", self.min_lr, "a finite number >= 0")
        require(finite(self.weight_decay) and self.weight_decay >= 0, "optim.weight_decay", self.weight_decay,
                "a finite number >= 0")
        require(finite(self.warmup_epochs) and self.warmup_epochs >= 0, "optim.warmup_epochs", self.warmup_epochs,
                "a number in [0, trainer.max_epochs]")
        require(isinstance(self.accum_iter, int) and not isinstance(self.accum_iter, bool) and self.accum_iter >= 1,
                "optim.accum_iter", self.accum_iter, "an integer >= 1")
        require(self.grad_clip is None or (finite(self.grad_clip) and self.grad_clip >= 0), "optim.grad_clip",
                self.grad_clip, "null, 0 (off) or a finite number > 0")
        require(isinstance(self.betas, (list, tuple)) and len(self.betas) == 2
                and all(finite(b) and 0 <= b < 1 for b in self.betas), "optim.betas", self.betas,
                "two numbers in [0, 1)")


def effective_batch(batch_size: int, accum_iter: int, world_size: int) -> int:
    return batch_size * accum_iter * world_size


def base_lr(cfg: OptimConfig, batch_size: int, world_size: int) -> float:
    """lr = blr * effective_batch / 256 unless lr is given (the MAE / reference linear scaling rule)."""
    if cfg.lr is not None:
        return float(cfg.lr)
    return cfg.blr * effective_batch(batch_size, cfg.accum_iter, world_size) / 256


def lr_at(epoch_float: float, lr: float, min_lr: float, warmup_epochs: float, epochs: int) -> float:
    """Linear warm-up lr·e/warmup, then half-cycle cosine from lr to min_lr at the last epoch."""
    if epoch_float < warmup_epochs:
        return lr * epoch_float / warmup_epochs
    span = max(epochs - warmup_epochs, 1e-12)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch_float - warmup_epochs) / span))


def param_groups(named_params, weight_decay: float) -> list[dict]:
    """No decay for biases and 1-D tensors (norms, class embedding); decay for everything else that trains."""
    decay, no_decay = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float, extra_groups: list[dict] = (),
                    fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW; fused (one kernel for all parameters) when the parameters live on a GPU, unless told otherwise."""
    groups = param_groups(model.named_parameters(), cfg.weight_decay) + list(extra_groups)
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), fused=fused or None)
