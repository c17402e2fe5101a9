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

import functools

import numpy as np
from scipy import stats

from .settings import ECE_BINS

MIN_OBJECTS, MIN_CLIPS = 5, 50
LOWER_BETTER = ("ece", "mae")
VERDICTS = ("better", "worse", "no detectable difference", "insufficient data")


def lower_is_better(metric: str) -> bool:
    return metric.endswith(LOWER_BETTER)


def per_object(metric: str, y: np.ndarray, pred: np.ndarray, objects: np.ndarray, ece_bins: int = ECE_BINS
               ) -> dict[str, float]:
    """{object: the metric on that object's clips} (objects where it is undefined, e.g. AUROC with one class, are
    left out). `pred`: class probabilities [N, C] or regression values [N]."""
    names, group = np.unique(objects, return_inverse=True)
    values = _per_group(metric, np.asarray(y), np.asarray(pred), group, len(names), ece_bins)
    return {str(name): float(v) for name, v in zip(names, values) if np.isfinite(v)}


def overall(metric: str, y: np.ndarray, pred: np.ndarray) -> float:
    """The metric on all the clips, as `per_object` defines it for one object's (nan where it is undefined)."""
    return float(_per_group(metric, np.asarray(y), np.asarray(pred), np.zeros(len(y), np.int64), 1, ECE_BINS)[0])


# Every object's value at once, from sums per object (np.bincount) rather than a metric per object's clips: the
# verdicts need ~500 of these (every probe score, control and metric), a second and a half of an evaluation's serial
# tail when each object was a call of its own.
def _per_group(metric: str, y: np.ndarray, pred: np.ndarray, group: np.ndarray, groups: int, ece_bins: int
               ) -> np.ndarray:
    """[groups]: the metric of each group's clips (nan where it is undefined)."""
    clips = np.bincount(group, minlength=groups)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(group, values, groups) / clips

    if metric == "r2":  # the object's part of R²: its mean squared error against the variance of all tested targets
        spread = float(np.var(y))
        return 1.0 - mean((y - pred) ** 2) / spread if spread > 0 else np.full(groups, np.nan)
    if metric == "mae":
        return mean(np.abs(y - pred))
    if pred.ndim != 2:
        return np.full(groups, np.nan)
    hard, classes, y = pred.argmax(1), pred.shape[1], y.astype(np.int64)  # class indices
    if metric in ("accuracy", "micro_f1"):  # one label per clip: micro F1 is accuracy
        return mean((hard == y).astype(float))
    if metric == "ece":
        conf = pred.max(1)
        cell = group * ece_bins + np.minimum((conf * ece_bins).astype(int), ece_bins - 1)  # (object, bin)
        gap = np.abs(np.bincount(cell, conf, groups * ece_bins) - np.bincount(cell, (hard == y).astype(float),
                                                                              groups * ece_bins))
        return (gap / clips.repeat(ece_bins)).reshape(groups, ece_bins).sum(1)
    # macro averages over the classes each object's clips show
    truth = group * classes + y  # (object, true class)
    true_count = np.bincount(truth, minlength=groups * classes).reshape(groups, classes)
    present = true_count > 0
    if metric == "macro_f1":
        hits = np.bincount(truth, (hard == y).astype(float), groups * classes).reshape(groups, classes)
        said = np.bincount(group * classes + hard, minlength=groups * classes).reshape(groups, classes)
        f1 = 2 * hits / np.maximum(1, said + true_count)
        return np.where(present, f1, 0.0).sum(1) / present.sum(1)
    if metric in ("macro_auroc", "macro_auprc"):
        score = grouped_auroc if metric == "macro_auroc" else grouped_average_precision
        per_class = np.stack([score(y == c, pred[:, c], group, groups) for c in range(classes)], 1)
        value = np.where(present, per_class, 0.0).sum(1) / present.sum(1)
        return np.where(present.sum(1) >= 2, value, np.nan)  # one class shown: undefined
    return np.full(groups, np.nan)


# AUROC and average precision written out per group: scikit-learn's roc_auc_score and average_precision_score give
# the same values (tests/test_verdicts.py), one call per object and class (thousands per evaluation).
def _sorted_runs(score: np.ndarray, group: np.ndarray, descending: bool) -> tuple[np.ndarray, ...]:
    """The clips sorted by group, then by score (stable) -> (order, each sorted clip's group, its place within its
    group, whether it starts / ends a run of equal scores within its group)."""
    order = np.lexsort((-score if descending else score, group))
    g, s = group[order], score[order]
    new_group = np.r_[True, g[1:] != g[:-1]]
    place = np.arange(len(g)) - np.maximum.accumulate(np.where(new_group, np.arange(len(g)), 0))
    starts = new_group | np.r_[True, s[1:] != s[:-1]]
    return order, g, place, starts, np.r_[starts[1:], True]


def grouped_auroc(positive: np.ndarray, score: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    """[groups]: binary AUROC within each group, as the Mann-Whitney statistic (tied scores count one half); nan
    where a group lacks either class."""
    order, g, place, starts, ends = _sorted_runs(score, group, descending=False)
    rank = ((place[starts] + place[ends]) / 2 + 1)[np.cumsum(starts) - 1]  # a run of ties shares its mean rank
    pos = positive[order].astype(float)
    n_pos, n = np.bincount(g, pos, groups), np.bincount(g, minlength=groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.bincount(g, rank * pos, groups) - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos))


def grouped_average_precision(positive: np.ndarray, score: np.ndarray, group: np.ndarray, groups: int
                              ) -> np.ndarray:
    """[groups]: Σ (recall_k − recall_k−1) · precision_k over each group's distinct scores, highest first; nan where
    a group has no positive."""
    order, g, place, starts, ends = _sorted_runs(score, group, descending=True)
    pos = positive[order].astype(float)
    total = np.bincount(g, pos, groups)
    found = np.cumsum(pos)
    found -= np.r_[0.0, found][np.arange(len(g)) - place]  # true positives so far, within the clip's group
    hits, g_end = found[ends], g[ends]
    gained = hits - np.where(np.r_[True, g_end[1:] != g_end[:-1]], 0.0, np.r_[0.0, hits[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.bincount(g_end, gained / total[g_end] * hits / (place[ends] + 1), groups)


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
    half = _t_quantile(0.5 + level / 2, len(diffs) - 1) * sd / np.sqrt(len(diffs))
    return mean - half, mean + half


@functools.cache
def _t_quantile(q: float, dof: int) -> float:  # scipy's ppf costs ~0.3 ms a call; the verdicts ask for a few dofs
    return float(stats.t.ppf(q, dof))


def verdict(lo: float, hi: float, metric: str) -> str:
    if lower_is_better(metric):  # a lower ECE or MAE is the good side: flip the interval
        lo, hi = -hi, -lo
    if lo > 0:
        return "better"
    if hi < 0:
        return "worse"
    return "no detectable difference"
