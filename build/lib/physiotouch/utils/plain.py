"""The one converter from config nodes to plain Python values (checkpoints hold plain values only, so that they
load with `weights_only=True`), and a settings dataclass's defaults as plain values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from omegaconf import OmegaConf


def to_plain(node: Any) -> Any:
    """An OmegaConf node (resolved), or a mapping that may hold some, -> plain dicts, lists and values."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    if isinstance(node, Mapping):
        return {k: to_plain(v) for k, v in node.items()}
    return node


def field_defaults(cls) -> dict[str, Any]:
    """A settings dataclass's field defaults as plain values (nested dataclasses as mappings; fields without a
    default are left out). No __post_init__ runs, so a default such as `device: auto` stays as written."""
    out = {}
    for f in fields(cls):
        if f.default is MISSING and f.default_factory is MISSING:
            continue
        value = f.default if f.default is not MISSING else f.default_factory()
        out[f.name] = field_defaults(type(value)) if is_dataclass(value) else value
    return out
