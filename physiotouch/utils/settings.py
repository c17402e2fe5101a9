"""The one way a settings dataclass is built from its config node (a composed node, a saved run's config, a
checkpoint's hyper-parameters): every key must be one of its fields and of its type, nested settings are built
too, and the object's own `validate()` (its range rules, written beside its fields) runs last. A wrong key or value
is one ConfigError naming it, never a TypeError from the constructor.

Composition already refuses a wrong key or type where the node is typed (`physiotouch/hydra_setup.py`); this check
is for what composition cannot see: keys added with `+`, and nodes that come from files.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

from physiotouch.cli import ConfigError, unknown_key, wrong_type
from physiotouch.utils.plain import to_plain

T = TypeVar("T")


def build_settings(cls: type[T], node: Any, where: str, **set_by_code: Any) -> T:
    """`cls` from a config node. `where`: the node's key in the config (for messages). `set_by_code`: fields the
    code sets rather than the config (the synthetic set's `out` is data.root). A `_target_` key is allowed only
    where the class names its builder (`BUILDER`)."""
    values = to_plain(node)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of {cls.__name__}'s settings; got {values!r}")
    values = dict(values)
    target = values.pop("_target_", None)
    if target is not None and target != getattr(cls, "BUILDER", None):
        raise ConfigError(f"{where}._target_={target!r}: {where} is built by "
                          f"{getattr(cls, 'BUILDER', 'physiotouch itself')} only")
    problem = settings_errors(values, cls, where)
    if problem:
        raise ConfigError(problem)
    settings = _construct(cls, {**values, **set_by_code})
    if hasattr(settings, "validate"):
        settings.validate()
    return settings


def _construct(cls: type, values: dict) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(**{k: _construct(hints[k], v) if is_dataclass(hints[k]) and isinstance(v, dict) else v
                  for k, v in values.items()})


def settings_errors(values: Any, cls: type, where: str) -> str | None:
    """The first key of a settings node that its dataclass does not have, or whose value has the wrong type."""
    if not isinstance(values, dict):
        return f"{where} must be a mapping of {cls.__name__}'s settings; got {values!r}"
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key, value in values.items():
        if key not in names:
            return unknown_key(f"{where}.{key}", names)
        if not _fits(value, hints[key]):
            return wrong_type(f"{where}.{key}", value, hints[key])
        if is_dataclass(hints[key]) and value is not None:
            nested = settings_errors(value, hints[key], f"{where}.{key}")
            if nested:
                return nested
    return None


def _fits(value: Any, hint: Any) -> bool:
    """Whether a plain config value can be a field of this type (int for float is fine; bool is never a number)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return integer(value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (list, tuple) or origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if hint is dict or origin is dict or is_dataclass(hint):
        return isinstance(value, dict)
    return True  # Any, or a type a config value is not checked against


# Range rules, written beside the fields they check (each settings dataclass's `validate`).
def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def require(ok: bool, key: str, value: Any, must: str) -> None:
    """One range rule: `key`'s value must be `must`."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is not valid: it must be {must} (set it with {key}=VALUE)")
