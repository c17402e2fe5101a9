"""The statistics of the results report: per-configuration summaries and paired comparisons over replicates.

Replicates are what varies independently (`Run.unit`): the seed, and under K-fold validation the object fold, its
seeds averaged within it (two seeds of one fold share their objects: counting them as two replicates makes a
fold-level effect look like evidence; a simulation gave 0.19 false positives at a nominal 0.05). Every comparison
is paired on the replicates two configurations share, and says, besides its p-value, how large the difference is
(mean and its 95% CI, Cohen's d_z) and the smallest difference the design could detect (80% power, two-sided 5%).
"""

from __future__ import annotations

import itertools
import math
import statistics

from scipy import integrate, optimize, stats

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
    replicates detects with POWER at ALPHA: exact, the power integrated over the chi-square distribution of the
    variance (scipy's noncentral t is not finite at 1 degree of freedom and large noncentrality, and the normal
    shortcut understates the effect at small n). n < 2: NaN (no test is possible)."""
    if n < 2:
        return math.nan
    df, crit = n - 1, stats.t.ppf(1 - ALPHA / 2, n - 1)

    def power(d: float) -> float:
        nc = d * math.sqrt(n)

        def given(v: float) -> float:  # P(|T| > crit | the variance's chi-square draw v)
            edge = crit * math.sqrt(v / df)
            return (stats.norm.sf(edge - nc) + stats.norm.cdf(-edge - nc)) * stats.chi2.pdf(v, df)

        return integrate.quad(given, 0, math.inf, limit=200)[0]

    high = 1.0
    while power(high) < POWER:  # bracket the root (power rises to 1 with d)
        high *= 2
    return optimize.brentq(lambda d: power(d) - POWER, 1e-9, high, xtol=1e-10)


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
        if len(shared) >= 2:  # identical on every replicate: no evidence of a difference (p = 1), reported and counted
            p = 1.0 if all(d == 0 for d in diffs) else float(
                stats.ttest_rel([groups[a][s] for s in shared], [groups[b][s] for s in shared]).pvalue)
        rows.append({"a": a, "b": b, "shared": shared, **paired(diffs), "p_value": p})
    for row, adj in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = adj
    return rows
