"""The coarse-to-fine rule, in one place: narrow every coarse range around the coarse study's best trials.

For each parameter of the coarse search space, take the values of the `top_k` best finished trials:
- numeric: the new range spans those values plus `margin` x their spread on each side (on a log axis for
  log-scale parameters), at least `min_width` of the coarse range (so one good trial does not collapse the
  range to a point), and never leaves the coarse range;
- categorical: the choices that occur among the top trials (the order of the coarse choices kept).
The fine study starts with the coarse best trial enqueued, so it can only improve on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution


@dataclass
class NarrowingRule:
    top_k: int = 5
    margin: float = 0.25
    min_width: float = 0.1  # fraction of the coarse range (of its log range for log-scale parameters)


def best_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None
            and math.isfinite(t.value)]
    if not done:
        raise ValueError(f"the coarse study '{study.study_name}' has no completed trial to narrow around; run "
                         f"hparams_search=coarse first (same storage)")
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: t.value, reverse=reverse)[:k]


def _span(lo: float, hi: float, values: list[float], rule: NarrowingRule) -> tuple[float, float]:
    vmin, vmax = min(values), max(values)
    pad = rule.margin * (vmax - vmin)
    new_lo, new_hi = vmin - pad, vmax + pad
    width = rule.min_width * (hi - lo)
    if new_hi - new_lo < width:
        centre = (vmin + vmax) / 2
        new_lo, new_hi = centre - width / 2, centre + width / 2
        if new_lo < lo:
            new_lo, new_hi = lo, lo + width
        if new_hi > hi:
            new_lo, new_hi = hi - width, hi
    return max(lo, new_lo), min(hi, new_hi)


def narrow(distribution: BaseDistribution, values: list, rule: NarrowingRule) -> BaseDistribution:
    """A distribution inside `distribution`, around `values` (those of the best coarse trials)."""
    if isinstance(distribution, CategoricalDistribution):
        kept = [c for c in distribution.choices if c in values]
        return CategoricalDistribution(kept or list(distribution.choices))
    if not isinstance(distribution, (FloatDistribution, IntDistribution)):
        raise TypeError(f"cannot narrow a {type(distribution).__name__}")
    is_int = isinstance(distribution, IntDistribution)
    if distribution.log:
        lo, hi = _span(math.log(distribution.low), math.log(distribution.high), [math.log(v) for v in values], rule)
        if is_int:
            lo_i = max(distribution.low, math.floor(math.exp(lo)))
            return IntDistribution(lo_i, max(lo_i, min(distribution.high, math.ceil(math.exp(hi)))), log=True)
        return FloatDistribution(math.exp(lo), math.exp(hi), log=True)
    lo, hi = _span(distribution.low, distribution.high, values, rule)
    step = distribution.step
    if step is None:
        return FloatDistribution(lo, hi)
    lo_s, hi_s = (distribution.low + step * f((v - distribution.low) / step) for v, f in
                  ((lo, math.floor), (hi, math.ceil)))  # widened outwards onto the grid of the coarse range
    hi_s = min(distribution.high, max(lo_s, hi_s))
    return IntDistribution(int(lo_s), int(hi_s), step=step) if is_int else FloatDistribution(lo_s, hi_s, step=step)


def fine_search_space(coarse: optuna.Study, rule: NarrowingRule) -> tuple[dict[str, BaseDistribution], dict]:
    """-> (narrowed distributions, the coarse best trial's params to enqueue first)."""
    top = best_trials(coarse, rule.top_k)
    space: dict[str, BaseDistribution] = {}
    for name, dist in top[0].distributions.items():
        values = [t.params[name] for t in top if name in t.params]
        space[name] = narrow(dist, values, rule)
    return space, dict(top[0].params)
