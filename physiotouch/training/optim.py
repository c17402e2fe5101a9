"""The reference's optimiser and schedule: AdamW with decay on weights only, per-step warm-up + half-cycle cosine.

Written out (not a torch LR scheduler) because the reference sets the rate from a fractional epoch
e = epoch + step / steps_per_epoch every accum_iter data steps; reproducing that exactly is one formula.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .settings import OptimConfig


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
