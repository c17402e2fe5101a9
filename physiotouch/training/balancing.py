"""Loss balancing that adapts: the weights of the static and dynamic terms in the joint mode, chosen per step.

The reference's authors balance by hand (watch static_contribution, edit α and β). The balancers here close that
loop; each is an nn.Module inside the LightningModule, so its state (EMAs, learned parameters) is saved in every
checkpoint and restored exactly on resume.

- fixed: α, β from the config (equal, balanced, and the ablations).
- auto: α, β follow EMAs of the two losses' magnitudes so that α·S / (α·S + β·D) approaches a target share, with
  α + β fixed, α bounded, and a warm-up before adaptation (α from the config until then).
- uncertainty (Kendall, Gal & Cipolla 2018): total = exp(-s₁)·S + exp(-s₂)·D + s₁ + s₂ with learned log-variances
  s, clamped to bounds, in their own optimiser group without weight decay. Logged α = exp(-s₁), β = exp(-s₂).
- gradnorm (Chen et al. 2018): learned weights w whose gradient norms on the last shared layer are pulled towards
  their mean scaled by each task's relative inverse training rate; w renormalised to sum 1 after every step.
  Justification of the simplification: GradNorm discards the gradient of its balancing loss with respect to the
  network, so the per-task gradient norms are computed once without a second-order graph (G_i = w_i·‖∇L_i‖),
  which gives the same update of w at the cost of two first-order gradients of one layer.
"""

from __future__ import annotations

import torch
from torch import nn

from physiotouch.cli import ConfigError

from .settings import LossConfig


class FixedBalancer(nn.Module):
    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.cfg = cfg

    def weights(self, static: torch.Tensor, dynamic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return static.new_tensor(self.cfg.alpha), static.new_tensor(self.cfg.beta)

    def total(self, static, dynamic, shared=None):
        """-> (training loss, α used, β used, extra term included in the loss)."""
        alpha, beta = self.weights(static.detach(), dynamic.detach())
        return alpha * static + beta * dynamic, alpha, beta, static.new_zeros(())

    def after_step(self) -> None:
        pass


class AutoBalancer(FixedBalancer):
    def __init__(self, cfg: LossConfig):
        super().__init__(cfg)
        self.register_buffer("ema_static", torch.zeros((), dtype=torch.float64))
        self.register_buffer("ema_dynamic", torch.zeros((), dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def weights(self, static, dynamic):
        cfg, d = self.cfg, self.cfg.ema_decay
        if self.training:
            first = self.steps == 0
            self.ema_static.copy_(torch.where(first, static.double(), d * self.ema_static + (1 - d) * static.double()))
            self.ema_dynamic.copy_(torch.where(first, dynamic.double(),
                                               d * self.ema_dynamic + (1 - d) * dynamic.double()))
            self.steps += 1
        total = cfg.alpha + cfg.beta
        if int(self.steps) <= cfg.warmup_steps:
            return static.new_tensor(cfg.alpha), static.new_tensor(cfg.beta)
        tau, s, dyn = cfg.target_share, self.ema_static.float(), self.ema_dynamic.float()
        share = tau * dyn / (tau * dyn + (1 - tau) * s)  # the α/(α+β) that gives the target share at these EMAs
        share = share.clamp(cfg.alpha_min, cfg.alpha_max)
        return (share * total).to(static.dtype), ((1 - share) * total).to(static.dtype)


class UncertaintyBalancer(FixedBalancer):
    def __init__(self, cfg: LossConfig):
        super().__init__(cfg)
        self.log_var_static = nn.Parameter(torch.zeros(()))
        self.log_var_dynamic = nn.Parameter(torch.zeros(()))

    def total(self, static, dynamic, shared=None):
        lo, hi = self.cfg.logvar_min, self.cfg.logvar_max
        s1, s2 = self.log_var_static.clamp(lo, hi), self.log_var_dynamic.clamp(lo, hi)
        alpha, beta = torch.exp(-s1), torch.exp(-s2)
        extra = s1 + s2
        return alpha * static + beta * dynamic + extra, alpha.detach(), beta.detach(), extra.detach()


class GradNormBalancer(FixedBalancer):
    def __init__(self, cfg: LossConfig):
        super().__init__(cfg)
        self.task_weights = nn.Parameter(torch.tensor([cfg.alpha, cfg.beta]) / (cfg.alpha + cfg.beta))
        self.register_buffer("initial", torch.zeros(2))

    def total(self, static, dynamic, shared=None):
        losses = torch.stack([static, dynamic])
        if not self.training or shared is None:
            w = self.task_weights.detach()
            return (w * losses).sum(), w[0], w[1], static.new_zeros(())
        if bool((self.initial == 0).all()):
            self.initial.copy_(losses.detach())
        norms = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(
            loss, shared, retain_graph=True, allow_unused=False)]).norm() for loss in (static, dynamic)])
        g = self.task_weights * norms  # G_i = ‖∇(w_i L_i)‖ on the shared layer, a function of w only
        ratio = losses.detach() / self.initial
        target = (g.mean() * (ratio / ratio.mean()) ** self.cfg.gradnorm_alpha).detach()
        balance = (g - target).abs().sum()
        w = self.task_weights.detach()
        return (w * losses).sum() + balance, w[0], w[1], balance.detach()

    @torch.no_grad()
    def after_step(self) -> None:
        w = self.task_weights.clamp_min(1e-3)
        self.task_weights.copy_(w / w.sum())


BALANCERS = {"fixed": FixedBalancer, "auto": AutoBalancer, "uncertainty": UncertaintyBalancer,
             "gradnorm": GradNormBalancer}


def build_balancer(cfg: LossConfig) -> FixedBalancer:
    if cfg.balancer not in BALANCERS:
        raise ConfigError(f"loss.balancer must be one of {sorted(BALANCERS)}; got {cfg.balancer!r}")
    if cfg.balancer != "fixed" and cfg.mode != "joint":
        raise ConfigError("adaptive balancing (loss.balancer) needs loss.mode=joint")
    return BALANCERS[cfg.balancer](cfg)

