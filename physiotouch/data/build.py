"""The one way a datamodule is built from a `data` config node: training, evaluation and release call it.

A run folder's `config_resolved.yaml` is a file that travels ("evaluate my run"), so it never chooses code to
run: the node's `_target_` may only name the datamodule itself, its keys must be the datamodule's own arguments,
and no value may carry a `_target_`. Nothing is instantiated recursively.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable

from omegaconf import DictConfig

from physiotouch.cli import ConfigError
from physiotouch.utils.plain import to_plain

from .datamodule import TactileDataModule
from .index import DataError

log = logging.getLogger(__name__)

ALLOWED_TARGETS = {None, "physiotouch.data.TactileDataModule", "physiotouch.data.datamodule.TactileDataModule"}


def _find_target(value: Any, key: str) -> str | None:
    if isinstance(value, dict):
        if "_target_" in value:
            return key
        return next((k for name, v in value.items() if (k := _find_target(v, f"{key}.{name}"))), None)
    if isinstance(value, (list, tuple)):
        return next((k for i, v in enumerate(value) if (k := _find_target(v, f"{key}[{i}]"))), None)
    return None


def build_datamodule(node: DictConfig | dict, source: str = "the config", **overrides) -> TactileDataModule:
    """`node`: a composed `data` config or the `data` mapping read from a run folder (`source` names the file)."""
    values = dict(to_plain(node) or {})
    values.update(overrides)
    target = values.pop("_target_", None)
    if target not in ALLOWED_TARGETS:
        raise ConfigError(f"{source}: data._target_={target!r} is not allowed; only physiotouch.data.TactileDataModule "
                          f"is built (a config file never chooses code to run)")
    nested = _find_target(values, "data")
    if nested:
        raise ConfigError(f"{source}: {nested} holds a _target_; data settings are plain values only")
    known = set(inspect.signature(TactileDataModule.__init__).parameters) - {"self"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown data key(s) {unknown}; the known keys are {sorted(known)}")
    return TactileDataModule(**values)


def rebuild_run_datamodule(node: DictConfig | dict, source: str, stage: str, data_change: Callable[[dict], str | None]
                           | None, must_match: bool = True, **overrides) -> TactileDataModule:
    """A run's datamodule built again (evaluate, the release), set up for `stage`, and checked against the data and
    split the run used (`data_change`: `RunDir.data_change`, None for no run): a change is refused before anything is
    computed on it, or only warned about when the user chose other data on purpose (`must_match=False`)."""
    datamodule = build_datamodule(node, source, **overrides)
    datamodule.prepare_data()
    datamodule.setup(stage)
    change = data_change(datamodule.record) if data_change is not None else None
    if change and must_match:
        raise DataError(change + "; the data changed since the run")
    if change:
        log.warning(change)
    return datamodule
