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

from .settings import LossConfig

# What one training batch trained, logged as `batch/mode` (the reference's numbers).
MODE_STATIC, MODE_DYNAMIC, MODE_JOINT = 0, 1, 2


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
