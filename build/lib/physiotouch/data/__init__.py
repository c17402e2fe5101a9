"""Tactile clip data: TacQuad-format index and frames, a built-in synthetic set, leak-free splits, a decoded cache."""

from .augment import AugmentConfig, augment_clips, normalize, to_float_clips
from .build import build_datamodule
from .datamodule import ClipDataset, TactileDataModule, clip_id
from .index import DataError, Sequence, read_index
from .splits import SplitConfig, split_sequences

__all__ = ["AugmentConfig", "ClipDataset", "DataError", "Sequence", "SplitConfig", "TactileDataModule",
           "augment_clips", "build_datamodule", "clip_id", "normalize", "read_index", "split_sequences",
           "to_float_clips"]
