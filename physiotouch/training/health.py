"""The reference authors' health rules for a run, checked on the epoch history and written to `health.json`.

Rules: loss_total falls; loss_ratio steady; the weighted contributions near the intended share;
loss_dynamic = loss_recon + loss_pred; no NaN/Inf. Added: the validation objective improves on its first value.
Each rule gets a verdict ("pass", "fail" or "n/a") and the figures behind it.
"""

from __future__ import annotations

import math
import statistics

from physiotouch.run_folder import trained_epochs

from .settings import LossConfig

RATIO_BAND = (0.7, 1.0)  # the reference's usual loss_ratio range; reported, not judged (it depends on the data)
RATIO_MAX_CV = 0.25


def _series(history: list[dict], key: str) -> list[float]:
    return [row[key] for row in trained_epochs(history) if key in row]


def _thirds(values: list[float]) -> tuple[float, float]:
    k = max(1, len(values) // 3)
    return statistics.fmean(values[:k]), statistics.fmean(values[-k:])


def check_health(history: list[dict], loss: LossConfig) -> dict:
    rules: dict[str, dict] = {}
    train = _series(history, "epoch/train_loss")
    if len(train) >= 2:
        first, last = _thirds(train)
        rules["loss_total_falls"] = {"verdict": "pass" if last < first else "fail",
                                     "first_third_mean": first, "last_third_mean": last, "epochs": len(train)}
    else:
        rules["loss_total_falls"] = {"verdict": "n/a", "why": "fewer than 2 epochs"}

    ratio = _series(history, "epoch/loss_ratio")
    if len(ratio) >= 3:
        tail = ratio[len(ratio) // 2:]
        mean = statistics.fmean(tail)
        cv = statistics.pstdev(tail) / mean if mean else math.inf
        rules["loss_ratio_steady"] = {"verdict": "pass" if cv <= RATIO_MAX_CV else "fail", "cv_second_half": cv,
                                      "max_cv": RATIO_MAX_CV, "mean_second_half": mean,
                                      "in_reference_band_0.7_1.0": RATIO_BAND[0] <= mean <= RATIO_BAND[1]}
    else:
        rules["loss_ratio_steady"] = {"verdict": "n/a", "why": "needs the joint mode and >= 3 epochs"}

    share = _series(history, "epoch/actual_static_contribution")
    if share and loss.mode == "joint":
        target, tol = loss.static_share_target, loss.share_tolerance
        rules["contributions_near_share"] = {"verdict": "pass" if abs(share[-1] - target) <= tol else "fail",
                                             "static_contribution_last": share[-1], "target": target,
                                             "tolerance": tol}
    else:
        rules["contributions_near_share"] = {"verdict": "n/a", "why": "only for the joint mode"}

    gaps = [abs(r["epoch/loss_dynamic"] - r["epoch/loss_recon"] - r["epoch/loss_pred"]) for r in history
            if "epoch/loss_dynamic" in r]
    gaps += [abs(r["val/loss_dynamic"] - r["val/loss_recon"] - r["val/loss_pred"]) for r in history
             if "val/loss_dynamic" in r]
    rules["dynamic_equals_recon_plus_pred"] = (
        {"verdict": "pass" if max(gaps) <= 1e-5 else "fail", "max_abs_gap": max(gaps)} if gaps else
        {"verdict": "n/a", "why": "no dynamic loss logged"})

    nonfinite = [(r.get("epoch"), k) for r in history for k, v in r.items() if isinstance(v, float) and
                 not math.isfinite(v) and k != "epoch/best_loss_so_far"]
    rules["no_nan_inf"] = {"verdict": "pass" if not nonfinite else "fail", "nonfinite": nonfinite[:10]}

    val = [r["val/objective"] for r in history if "val/objective" in r]
    if len(val) >= 2:
        rules["val_objective_improves"] = {"verdict": "pass" if min(val[1:]) < val[0] else "fail",
                                           "first": val[0], "best": min(val), "relative_drop":
                                           (val[0] - min(val)) / val[0] if val[0] else 0.0}
    else:
        rules["val_objective_improves"] = {"verdict": "n/a", "why": "fewer than 2 validations"}

    verdicts = [r["verdict"] for r in rules.values()]
    overall = "fail" if "fail" in verdicts else "pass"
    return {"overall": overall, "rules": rules}


def format_health(health: dict) -> str:
    lines = [f"health: {health['overall'].upper()}"]
    for name, rule in health["rules"].items():
        figures = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rule.items()
                            if k != "verdict")
        lines.append(f"  [{rule['verdict']:>4}] {name}: {figures}")
    return "\n".join(lines)
