"""Tactile clip data: TacQuad-format index and frames, a built-in synthetic set, leak-free splits, a decoded cache.

The names below load on first use (PEP 562), so that importing one torch-free module of this package (the settings,
the index, the splits: what composing the config needs) does not import torch and Lightning.
"""

from __future__ import annotations

from physiotouch.utils.lazy import lazy_names

_HOME = {"augment_clips": ".augment", "normalize": ".augment", "to_float_clips": ".augment",
         "build_datamodule": ".build", "ClipDataset": ".datamodule", "TactileDataModule": ".datamodule",
         "clip_id": ".datamodule", "DataError": ".index", "Sequence": ".index", "read_index": ".index",
         "AugmentConfig": ".settings", "SplitConfig": ".splits", "split_sequences": ".splits"}
__all__ = sorted(_HOME)

__getattr__ = lazy_names(__name__, _HOME)
