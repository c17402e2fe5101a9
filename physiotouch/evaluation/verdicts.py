"""Verdicts with intervals: is the model's probe better than a control's, with the object as the unit?

Clips of one object are not independent (same geometry, same recordings), so a comparison over clips would count
one object's luck many times. Here each tested object gives one paired value, the metric on that object's clips
for the model minus the same for the control, and the verdict reads the 95% t-interval of their mean:
- `better`: the whole interval on the good side of zero (above; below for ECE and MAE);
- `worse`: the whole interval on the other side;
- `no detectable difference`: an interval that holds zero (also when every difference is exactly zero);
- `insufficient data`: fewer than MIN_OBJECTS tested objects or MIN_CLIPS tested clips: no verdict at all.
Never `better` on a point estimate. R² is split into per-object parts that add up to it (1 − the object's mean
squared error over the variance of all tested targets), so its per-object differences are differences in
explained variance.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

MIN_OBJECTS, MIN_CLIPS = 5, 50
LOWER_BETTER = ("ece", "mae")
VERDICTS = ("better", "worse", "no detectable difference", "insufficient data")


def lower_is_better(metric: str) -> bool:
    return metric.endswith(LOWER_BETTER)


def per_object(metric: str, y: np.ndarray, pred: np.ndarray, objects: np.ndarray, ece_bins: int = 10
               ) -> dict[str, float]:
    """{object: the metric on that object's clips} (objects where it is undefined, e.g. AUROC with one class, are
    left out). `pred`: class probabilities [N, C] or regression values [N]."""
    spread = float(np.var(y)) if pred.ndim == 1 else 0.0
    out = {}
    for obj in np.unique(objects):
        sel = objects == obj
        value = _metric(metric, y[sel], pred[sel], spread, ece_bins)
        if value is not None and np.isfinite(value):
            out[str(obj)] = float(value)
    return out


def _metric(metric: str, y: np.ndarray, pred: np.ndarray, spread: float, ece_bins: int) -> float | None:
    if metric == "r2":
        return 1.0 - float(np.mean((y - pred) ** 2)) / spread if spread > 0 else None
    if metric == "mae":
        return float(np.mean(np.abs(y - pred)))
    hard = pred.argmax(1)
    if metric in ("accuracy", "micro_f1"):  # one label per clip: micro F1 is accuracy
        return float(np.mean(hard == y))
    present = np.unique(y)
    if metric == "macro_f1":
        f1 = [2 * np.sum((hard == c) & (y == c)) / max(1, np.sum(hard == c) + np.sum(y == c)) for c in present]
        return float(np.mean(f1))
    if metric == "ece":
        conf, correct = pred.max(1), hard == y
        bins = np.minimum((conf * ece_bins).astype(int), ece_bins - 1)
        return float(sum(abs(conf[bins == b].mean() - correct[bins == b].mean()) * np.mean(bins == b)
                         for b in np.unique(bins)))
    if metric in ("macro_auroc", "macro_auprc"):
        if len(present) < 2:
            return None
        score = auroc if metric == "macro_auroc" else average_precision
        return float(np.mean([score(y == c, pred[:, c]) for c in present]))
    return None


# AUROC and average precision written out: scikit-learn's roc_auc_score and average_precision_score give the same
# values (tests/test_verdicts.py), but check their arguments for ~10 ms a call, and the verdicts make thousands of
# calls on a few clips each (every object, class, control and metric): seconds of an evaluation otherwise.
def auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Binary AUROC as the Mann-Whitney statistic (tied scores count one half); both classes present."""
    ranks = stats.rankdata(score)
    n_pos = int(positive.sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(positive) - n_pos)))


def average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """Σ (recall_k − recall_k−1) · precision_k over the distinct scores, highest first; some positive present."""
    order = np.argsort(-score, kind="stable")
    ends = np.r_[np.flatnonzero(np.diff(score[order])), len(score) - 1]  # the last clip at each distinct score
    true_pos = np.cumsum(positive[order])[ends]
    precision, recall = true_pos / (ends + 1), true_pos / true_pos[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def paired(model: dict[str, float], control: dict[str, float], metric: str, clips: int) -> dict:
    """The model's per-object values against a control's on the same objects -> {diff, diff_ci95, verdict,
    objects}."""
    common = sorted(set(model) & set(control))
    diffs = np.array([model[o] - control[o] for o in common])
    out = {"objects": len(common), "clips": int(clips)}
    if len(common) < MIN_OBJECTS or clips < MIN_CLIPS:
        return {**out, "diff": float(diffs.mean()) if len(diffs) else None, "diff_ci95": None,
                "verdict": "insufficient data"}
    return {**out, **interval_verdict(diffs, metric)}


def interval_verdict(diffs: np.ndarray, metric: str) -> dict:
    """{diff, diff_ci95, verdict} of paired differences (n >= 2). Every difference zero: no detectable difference
    (reported, not dropped). The same nonzero difference every time has no spread to build an interval from (a
    probe that collapsed to the same predictions): `insufficient data`, never a verdict from a point."""
    mean = float(diffs.mean())
    if np.ptp(diffs) == 0 and mean != 0:
        return {"diff": mean, "diff_ci95": None, "verdict": "insufficient data"}
    lo, hi = interval(diffs)
    return {"diff": mean, "diff_ci95": [lo, hi], "verdict": verdict(lo, hi, metric)}


def interval(diffs: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean of `diffs` (n >= 2); [d, d] when every difference is d."""
    mean, sd = float(diffs.mean()), float(diffs.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(diffs) - 1)) * sd / np.sqrt(len(diffs))
    return mean - half, mean + half


def verdict(lo: float, hi: float, metric: str) -> str:
    if lower_is_better(metric):  # a lower ECE or MAE is the good side: flip the interval
        lo, hi = -hi, -lo
    if lo > 0:
        return "better"
    if hi < 0:
        return "worse"
    return "no detectable difference"
