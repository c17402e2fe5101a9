"""The statistics of the results report: per-configuration summaries and paired comparisons over replicates.

Replicates are what repeats a configuration: seeds, and under K-fold validation folds × seeds (each fold holds
other objects, so the spread across replicates includes the spread across objects). Every comparison is paired on
the replicates two configurations share, and says, besides its p-value, how large the difference is (mean and its
95% CI, Cohen's d_z) and the smallest difference the design could detect (80% power, two-sided 5%).
"""

from __future__ import annotations

import itertools
import math
import statistics

from scipy import optimize, stats

POWER, ALPHA = 0.8, 0.05


def summarise(values: list[float]) -> dict:
    n = len(values)
    mean = statistics.fmean(values) if values else math.nan
    std = statistics.stdev(values) if n >= 2 else math.nan
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * std / math.sqrt(n) if n >= 2 else math.nan
    return {"n": n, "mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (several configurations compared at once). Comparisons without a p-value
    (NaN: too few shared replicates) are not tests: they neither count in m nor get an adjusted value."""
    tested = sorted((i for i, p in enumerate(pvalues) if not math.isnan(p)), key=lambda i: pvalues[i])
    adjusted, running = [math.nan] * len(pvalues), 0.0
    for rank, i in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def detectable_effect(n: int) -> float:
    """The standardised effect d (mean / sd of the paired differences) that a two-sided paired t-test on n
    replicates detects with POWER at ALPHA, from the noncentral t distribution (exact, not the normal shortcut)."""
    df, crit = n - 1, stats.t.ppf(1 - ALPHA / 2, n - 1)

    def power(d: float) -> float:
        nc = d * math.sqrt(n)
        return stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)

    high = 1.0
    while power(high) < POWER and high < 256:  # bracket the root
        high *= 2
    if not math.isfinite(power(high)) or power(high) < POWER:
        # scipy's noncentral t is not finite here (1 degree of freedom, large noncentrality): the usual shortcut
        return (crit + stats.t.ppf(POWER, df)) / math.sqrt(n)
    return optimize.brentq(lambda d: power(d) - POWER, 1e-9, high)


def paired(diffs: list[float]) -> dict:
    """Mean paired difference, its 95% CI, Cohen's d_z and the minimum detectable difference (MDD): the difference
    a paired t-test with this many replicates and this spread of differences finds with 80% power."""
    n = len(diffs)
    out = {"mean_diff": statistics.fmean(diffs) if diffs else math.nan, "diff_ci95_low": math.nan,
           "diff_ci95_high": math.nan, "effect_dz": math.nan, "mdd": math.nan}
    if n < 2:
        return out
    sd = statistics.stdev(diffs)
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n)
    out.update(diff_ci95_low=out["mean_diff"] - half, diff_ci95_high=out["mean_diff"] + half,
               effect_dz=out["mean_diff"] / sd if sd > 0 else math.nan,
               mdd=detectable_effect(n) * sd)
    return out


def compare(groups: dict[str, dict[str, float]]) -> list[dict]:
    """Paired comparisons of every two configurations on the replicates (seeds, folds) they share (paired t-test,
    Holm-adjusted), each with its effect size and the smallest difference the design can detect."""
    rows = []
    for a, b in itertools.combinations(sorted(groups), 2):
        shared = sorted(set(groups[a]) & set(groups[b]))
        diffs = [groups[a][s] - groups[b][s] for s in shared]
        p = math.nan
        if len(shared) >= 2 and any(abs(d) > 0 for d in diffs):
            p = float(stats.ttest_rel([groups[a][s] for s in shared], [groups[b][s] for s in shared]).pvalue)
        rows.append({"a": a, "b": b, "shared": shared, **paired(diffs), "p_value": p})
    for row, adj in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = adj
    return rows
