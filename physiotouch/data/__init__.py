"""Tactile clip data: TacQuad-format index and frames, a built-in synthetic set, leak-free splits, a decoded cache.

The names below load on first use (PEP 562), so that importing one torch-free module of this package (the settings,
the index, the splits: what composing the config needs) does not import torch and Lightning.
"""

from __future__ import annotations

import importlib

_HOME = {"augment_clips": ".augment", "normalize": ".augment", "to_float_clips": ".augment",
         "build_datamodule": ".build", "ClipDataset": ".datamodule", "TactileDataModule": ".datamodule",
         "clip_id": ".datamodule", "DataError": ".index", "Sequence": ".index", "read_index": ".index",
         "AugmentConfig": ".settings", "SplitConfig": ".splits", "split_sequences": ".splits"}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name], __name__), name)
