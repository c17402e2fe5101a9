"""The loss-weight schemes (the `loss` config group) and how each turns one batch into a training loss.

- joint (equal, balanced): one video pass gives all losses; total = α·static + β·dynamic.
- alternating (baseline_alternating): each batch is static (image path on frame 1) with probability static_ratio,
  else dynamic (video path, recon + pred). This trains the image patch embedding and image head, which the joint
  mode never uses: the two modes optimise different parameter sets (the joint mode freezes the image path, so
  that DDP needs no unused-parameter search).
`pred_weight` scales the frame-4 term inside the dynamic loss used for training (1 = the reference; 0 = the
"recon without pred" ablation); the logged loss_dynamic stays recon + pred, the reference's definition.
"""

from __future__ import annotations

from dataclasses import dataclass

MODE_STATIC, MODE_DYNAMIC, MODE_JOINT = 0, 1, 2


@dataclass
class LossConfig:
    name: str = "balanced"
    mode: str = "joint"  # joint | alternating
    alpha: float = 0.75
    beta: float = 0.25
    static_ratio: float = 0.5
    pred_weight: float = 1.0
    # What share of the weighted total the static term is meant to carry (the health rule); None: α/(α+β).
    target_static_share: float | None = None
    share_tolerance: float = 0.15

    def validate(self) -> None:
        if self.mode not in ("joint", "alternating"):
            raise ValueError(f"loss.mode must be 'joint' or 'alternating'; got {self.mode!r}")
        if self.alpha < 0 or self.beta < 0 or self.alpha + self.beta <= 0:
            raise ValueError(f"loss.alpha and loss.beta must be >= 0 with a positive sum; got {self.alpha}, {self.beta}")
        if not 0.0 <= self.static_ratio <= 1.0:
            raise ValueError(f"loss.static_ratio must lie in [0, 1]; got {self.static_ratio}")

    @property
    def static_share_target(self) -> float:
        if self.target_static_share is not None:
            return float(self.target_static_share)
        return self.alpha / (self.alpha + self.beta)

    def training_dynamic(self, loss_recon, loss_pred):
        return loss_recon + self.pred_weight * loss_pred

    def joint_total(self, loss_static, loss_recon, loss_pred):
        return self.alpha * loss_static + self.beta * self.training_dynamic(loss_recon, loss_pred)
