"""The search space grammar of `hydra.sweeper.params`, read into Optuna distributions.

The grammar is Hydra's sweep syntax, with the meanings that hydra-optuna-sweeper gave it (configs written for that
plugin, and lightning-hydra-template's, mean the same here):
- `choice(a, b, ...)`                  -> categorical
- `interval(lo, hi)`                    -> float in [lo, hi] (`int(interval(lo, hi))`: integer)
- `tag(log, interval(lo, hi))`          -> the same on a log scale
- `range(start, stop[, step])`          -> integers (or floats) from start to stop *inclusive*, every step (the
                                          plugin's meaning; Hydra's own range excludes stop); `shuffle(range(...))`
                                          -> categorical over the values Hydra lists
- a plain value (`x=3`)                  -> fixed for every trial, not searched
Parsed with Hydra's public override parser; the mapping is ours (the plugin it replaces pins optuna<3).
"""

from __future__ import annotations

import math
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from physiotouch.cli import ConfigError


def _choices(override: Override) -> CategoricalDistribution:
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    for v in values:
        if not isinstance(v, (str, int, float, bool)):
            raise ConfigError(f"hydra.sweeper.params.{override.get_key_element()}: a choice must be a str, int, float "
                              f"or bool, got {v!r}")
    return CategoricalDistribution(values)


def distribution(override: Override) -> BaseDistribution | str:
    """One override -> its distribution, or the fixed value as override text."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    key, value = override.get_key_element(), override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return _choices(override)
    if isinstance(value, RangeSweep):
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step)
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(f"hydra.sweeper.params.{key}: '{override.input_line}' is not a search space this sweeper "
                      f"knows; use choice(...), range(...), interval(...) or tag(log, interval(...))")


def search_space(params: dict | None, arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """`hydra.sweeper.params` plus the command line's sweep overrides -> (distributions, fixed values). A key given
    on the command line replaces the config's entry for it; a fixed value removes the key from the search."""
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except Exception as err:  # noqa: BLE001 - Hydra's parse errors carry the offending text
        raise ConfigError(f"hydra.sweeper.params: {str(err).splitlines()[0]}") from None
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in parsed:
        key, dist = override.get_key_element(), distribution(override)
        space.pop(key, None)
        fixed.pop(key, None)
        if isinstance(dist, BaseDistribution):
            space[key] = dist
        else:
            fixed[key] = dist
    return space, fixed


def override_text(value: Any) -> str:
    """A sampled value as Hydra override text (floats at full precision)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def describe(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"choice{tuple(dist.choices)}"
    kind = "log " if getattr(dist, "log", False) else ""
    return f"{kind}[{dist.low:.6g}, {dist.high:.6g}]"


GRID_ALL_INTEGERS = 10


def grid_values(name: str, dist: BaseDistribution, points: int) -> list:
    """The values a grid search tries for one parameter: a choice's choices, a range's every step (an integer
    interval's every integer, up to GRID_ALL_INTEGERS of them), and otherwise `points` values spread over the
    interval (log-spaced on a log scale; integers deduplicated)."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if dist.step is not None and not dist.log:  # range(start, stop, step) or an integer interval, stop included
        count = int(round((dist.high - dist.low) / dist.step)) + 1
        if isinstance(dist, FloatDistribution) or count <= GRID_ALL_INTEGERS:
            return [type(dist.low)(dist.low + i * dist.step) for i in range(count)]
    if points < 2:
        raise ConfigError(f"search.grid_points: {points}; a grid needs at least 2 values of '{name}'")
    lo, hi = (math.log(dist.low), math.log(dist.high)) if dist.log else (dist.low, dist.high)
    values = [lo + (hi - lo) * i / (points - 1) for i in range(points)]
    values = [math.exp(v) for v in values] if dist.log else values
    values[0], values[-1] = dist.low, dist.high  # exactly the ends, not their rounded logarithms
    if isinstance(dist, IntDistribution):
        return sorted({int(round(v)) for v in values})
    return values


def grid_space(space: dict[str, BaseDistribution], points: int) -> dict[str, list]:
    """The search space as GridSampler's {name: values}."""
    return {name: grid_values(name, dist, points) for name, dist in space.items()}


def check_groups(pruner, sampler) -> None:
    """The sweeper's pruner and sampler are Optuna objects (or the grid sampler's partial), checked before any trial:
    `hydra.sweeper.pruner=median` sets a value where the config group `hydra/sweeper/pruner=median` was meant."""
    import optuna

    for group, value, kind in (("pruner", pruner, optuna.pruners.BasePruner),
                               ("sampler", sampler, optuna.samplers.BaseSampler)):
        if isinstance(value, (str, int, float)):
            raise ConfigError(f"hydra.sweeper.{group}={value} sets a value, not a {group}: choose the config group "
                              f"with hydra/sweeper/{group}={value}")
        if not isinstance(value, kind) and not callable(value):
            raise ConfigError(f"hydra.sweeper.{group} is not an Optuna {group}; choose one with "
                              f"hydra/sweeper/{group}=NAME")
