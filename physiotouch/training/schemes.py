"""The loss-weight schemes (the `loss` config group) and how each turns one batch into a training loss.

- joint (equal, balanced, the adaptive balancers): one video pass gives all losses; total = α·static + β·dynamic,
  the weights from the balancer (training/balancing.py).
- alternating (baseline_alternating): each batch is static (image path on frame 1) with probability static_ratio,
  else dynamic (video path, recon + pred). This trains the image patch embedding and image head, which the joint
  mode never uses: the two modes optimise different parameter sets (a scheme's `paths` say which model paths it
  trains; the model freezes the rest, so that DDP needs no unused-parameter search).
`pred_weight` scales the frame-4 term inside the dynamic loss used for training (1 = the reference; 0 = the
"recon without pred" ablation); the logged loss_dynamic stays recon + pred, the reference's definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from physiotouch.cli import ConfigError
from physiotouch.utils.settings import finite, require

# What one training batch trained, logged as `batch/mode` (the reference's numbers).
MODE_STATIC, MODE_DYNAMIC, MODE_JOINT = 0, 1, 2


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


@dataclass
class Step:
    """One training batch's outcome: the loss to backpropagate and what it was made of."""

    total: torch.Tensor  # the training loss
    losses: dict[str, torch.Tensor]  # the model's losses of the pass (video: all terms; image: loss_static)
    mode: int  # MODE_STATIC | MODE_DYNAMIC | MODE_JOINT
    alpha: torch.Tensor | None = None  # joint only: the weights used, and the dynamic term they weighted
    beta: torch.Tensor | None = None
    trained_dynamic: torch.Tensor | None = None


Pass = Callable[[torch.Tensor, torch.Tensor], dict]  # (clips, noise) -> the model's outputs


class JointScheme:
    paths = ("video",)  # the model paths it trains
    joint = True  # weighs both terms in every batch (its epochs report the weights and their shares)

    def __init__(self, cfg: LossConfig, balancer, shared: Callable[[], torch.nn.Parameter]):
        # `shared` is asked at each step, not kept: moving the model to a device may replace its parameters.
        self.cfg, self.balancer, self.shared = cfg, balancer, shared

    def step(self, passes: dict[str, Pass], clips: torch.Tensor, noise: torch.Tensor, gen: torch.Generator) -> Step:
        out = passes["video"](clips, noise)
        dynamic = self.cfg.training_dynamic(out["loss_recon"], out["loss_pred"])
        total, alpha, beta, _ = self.balancer.total(out["loss_static"], dynamic, [self.shared()])
        return Step(total, out, MODE_JOINT, alpha, beta, dynamic.detach())


class AlternatingScheme:
    paths = ("video", "image")
    joint = False

    def __init__(self, cfg: LossConfig):
        self.cfg = cfg

    def step(self, passes: dict[str, Pass], clips: torch.Tensor, noise: torch.Tensor, gen: torch.Generator) -> Step:
        if torch.rand(1, device=clips.device, generator=gen).item() < self.cfg.static_ratio:
            out = passes["image"](clips, noise)
            return Step(out["loss_static"], out, MODE_STATIC)
        out = passes["video"](clips, noise)
        return Step(self.cfg.training_dynamic(out["loss_recon"], out["loss_pred"]), out, MODE_DYNAMIC)


def build_scheme(cfg: LossConfig, balancer, model) -> JointScheme | AlternatingScheme:
    """The scheme of `loss.mode`; the joint one balances on the model's shared decoder layer."""
    if cfg.mode == "joint":
        return JointScheme(cfg, balancer, model.shared_decoder_weight)
    return AlternatingScheme(cfg)
