"""The training settings (the `optim` and `loss` config nodes): their fields, only defaults and range rules. Kept
apart from the torch code that uses them, so that composing the config (`--help`, `--cfg job`) imports no torch."""

from __future__ import annotations

from dataclasses import dataclass

from physiotouch.cli import ConfigError
from physiotouch.utils.settings import finite, integer, require


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
        require(integer(self.accum_iter) and self.accum_iter >= 1, "optim.accum_iter", self.accum_iter,
                "an integer >= 1")
        require(self.grad_clip is None or (finite(self.grad_clip) and self.grad_clip >= 0), "optim.grad_clip",
                self.grad_clip, "null, 0 (off) or a finite number > 0")
        require(isinstance(self.betas, (list, tuple)) and len(self.betas) == 2
                and all(finite(b) and 0 <= b < 1 for b in self.betas), "optim.betas", self.betas,
                "two numbers in [0, 1)")


@dataclass
class LossConfig:
    """The `loss` config node's keys; the defaults (the only ones) are the balanced scheme's."""

    name: str = "balanced"
    mode: str = "joint"  # joint | alternating
    alpha: float = 0.75
    beta: float = 0.25
    static_ratio: float = 0.5
    pred_weight: float = 1.0
    # What share of the weighted total the static term is meant to carry (the health rule); None: α/(α+β).
    target_static_share: float | None = 0.5
    share_tolerance: float = 0.15
    # Adaptive balancing in the joint mode (training/balancing.py): fixed | auto | uncertainty | gradnorm.
    balancer: str = "fixed"
    target_share: float = 0.5  # auto: the static term's intended share of the weighted total
    ema_decay: float = 0.99
    warmup_steps: int = 50
    alpha_min: float = 0.05
    alpha_max: float = 0.95
    logvar_min: float = -4.0  # uncertainty: bounds of the learned log-variances
    logvar_max: float = 4.0
    gradnorm_alpha: float = 1.5  # GradNorm's asymmetry
    balancer_lr: float = 0.025  # learning rate of learned balancing parameters (own group, no decay, no schedule)

    def validate(self) -> None:
        if self.mode not in ("joint", "alternating"):
            raise ConfigError(f"loss.mode must be 'joint' or 'alternating'; got {self.mode!r}")
        require(finite(self.alpha) and self.alpha >= 0, "loss.alpha", self.alpha, "a finite number >= 0")
        require(finite(self.beta) and self.beta >= 0, "loss.beta", self.beta, "a finite number >= 0")
        if self.alpha + self.beta <= 0:
            raise ConfigError("loss.alpha + loss.beta must be > 0")
        require(finite(self.static_ratio) and 0 <= self.static_ratio <= 1, "loss.static_ratio", self.static_ratio,
                "a number in [0, 1]")

    @property
    def static_share_target(self) -> float:
        if self.target_static_share is not None:
            return float(self.target_static_share)
        return self.alpha / (self.alpha + self.beta)

    def training_dynamic(self, loss_recon, loss_pred):
        return loss_recon + self.pred_weight * loss_pred
