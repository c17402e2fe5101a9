"""The one converter from config nodes to plain Python values (checkpoints hold plain values only, so that they
load with `weights_only=True`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf


def to_plain(node: Any) -> Any:
    """An OmegaConf node (resolved), or a mapping that may hold some, -> plain dicts, lists and values."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    if isinstance(node, Mapping):
        return {k: to_plain(v) for k, v in node.items()}
    return node
