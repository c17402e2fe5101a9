"""Batch and epoch bookkeeping: the reference's `batch/*` and `epoch/*` loss metrics, from the schemes' Steps.

Sums stay on the device during the epoch (no host sync per batch); `take` reduces them across processes once.
Written out rather than as torchmetrics aggregators because the epoch's weighted contributions are ratios of
sums over different batch counts (static batches, dynamic batches, all batches), which plain sums express directly.
"""

from __future__ import annotations

from typing import Callable

import torch

from .schemes import MODE_DYNAMIC, MODE_JOINT, MODE_STATIC, Step

SUMS = ("total", "static", "dynamic", "recon", "pred", "alpha", "beta", "w_static", "w_dynamic", "n_static",
        "n_dynamic", "n_total")


def batch_metrics(step: Step) -> dict[str, torch.Tensor | float]:
    """The `batch/*` loss metrics of one training batch (what the scheme trained, with the weights it used)."""
    out = step.losses
    metrics = {"batch/loss_total": step.total.detach(), "batch/mode": float(step.mode)}
    if "loss_recon" in out:
        for key in ("loss_recon", "loss_pred", "loss_dynamic"):
            metrics[f"batch/{key}"] = out[key].detach()
    if step.mode != MODE_DYNAMIC:
        metrics["batch/loss_static"] = out["loss_static"].detach()
    if step.mode == MODE_JOINT:
        static, dynamic = out["loss_static"].detach(), out["loss_dynamic"].detach()
        w_static, w_dynamic = step.alpha * static, step.beta * step.trained_dynamic
        metrics.update({"batch/loss_ratio": static / dynamic, "batch/weighted_static": w_static,
                        "batch/weighted_dynamic": w_dynamic, "batch/alpha": step.alpha, "batch/beta": step.beta,
                        "batch/static_contribution": w_static / (w_static + w_dynamic),
                        "batch/dynamic_contribution": w_dynamic / (w_static + w_dynamic)})
    return metrics


class EpochStats:
    """Sums of one epoch's batch losses and weights."""

    def __init__(self):
        self._sums: dict[str, torch.Tensor] = {}

    def add(self, step: Step) -> None:
        if not self._sums:
            self._sums = {k: torch.zeros((), device=step.total.device, dtype=torch.float64) for k in SUMS}
        s, out = self._sums, step.losses
        s["total"] += step.total.detach()
        s["n_total"] += 1
        if step.mode != MODE_DYNAMIC:
            s["static"] += out["loss_static"].detach()
            s["n_static"] += 1
        if step.mode != MODE_STATIC:
            for key in ("dynamic", "recon", "pred"):
                s[key] += out[f"loss_{key}"].detach()
            s["n_dynamic"] += 1
        if step.mode == MODE_JOINT:
            s["alpha"] += step.alpha
            s["beta"] += step.beta
            s["w_static"] += step.alpha * out["loss_static"].detach()
            s["w_dynamic"] += step.beta * step.trained_dynamic

    def take(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """The epoch's sums, reduced across processes; the next epoch starts from zero."""
        sums = {k: float(reduce_sum(v)) for k, v in self._sums.items()}
        self._sums = {}
        return sums


def epoch_means(s: dict[str, float], joint: bool) -> dict[str, float]:
    """The reference's `epoch/*` metrics from an epoch's sums (train_loss, the loss terms, the weights' shares)."""
    row = {}
    if joint and s.get("n_total"):  # mean weights used (constant for fixed schemes)
        row["epoch/alpha"], row["epoch/beta"] = s["alpha"] / s["n_total"], s["beta"] / s["n_total"]
    if s.get("n_total"):
        row["epoch/train_loss"] = s["total"] / s["n_total"]
    if s.get("n_static"):
        row["epoch/loss_static"] = s["static"] / s["n_static"]
    if s.get("n_dynamic"):
        for key in ("dynamic", "recon", "pred"):
            row[f"epoch/loss_{key}"] = s[key] / s["n_dynamic"]
    if joint and "epoch/loss_static" in row and "epoch/loss_dynamic" in row:
        static, dynamic = row["epoch/loss_static"], row["epoch/loss_dynamic"]
        # Means of α_t·S_t and β_t·D_t over the epoch: the reference's α·mean(S) for fixed weights.
        w_static, w_dynamic = s["w_static"] / s["n_total"], s["w_dynamic"] / s["n_total"]
        row.update({"epoch/loss_ratio": static / dynamic, "epoch/weighted_static": w_static,
                    "epoch/weighted_dynamic": w_dynamic,
                    "epoch/actual_static_contribution": w_static / (w_static + w_dynamic),
                    "epoch/actual_dynamic_contribution": w_dynamic / (w_static + w_dynamic)})
    return row
