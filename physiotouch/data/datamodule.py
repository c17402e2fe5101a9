"""The LightningDataModule: index -> leak-free splits -> decoded caches (train, val) -> 4-frame window datasets.

Batches leave the loader as uint8 [B, 4, S, S, 3]; conversion, augmentation and normalisation happen on the
training device (`physiotouch.data.augment`), driven by the LightningModule with a per-step generator.
The test split is never opened here: `release_test_dataset` exists for the release command alone.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from physiotouch.utils.settings import build_settings

from .background import background_of, check_background, remove_background, sensor_medians
from .cache import FrameCache, build_cache
from .check import check_sequence_frames, missing_frames, outside_root, quick_check
from .frames import decode_frame
from .index import DEFAULT_LABEL_REGEX, WINDOW, DataError, IndexProblem, Sequence, read_index
from .splits import SplitConfig, data_version, split_sequences, splits_record
from .synthetic import SynthConfig, ensure_synthetic

log = logging.getLogger(__name__)
SHOW_PROBLEMS = 8


def clip_id(folder: str, t: int) -> int:
    """A stable integer per window (its last frame), used to seed the fixed validation mask of that clip."""
    return zlib.crc32(f"{folder}:{t}".encode())


@dataclass
class Windows:
    """Which windows a dataset serves: sequence index and last frame t of each, plus labels."""
    seq: np.ndarray
    t: np.ndarray


def make_windows(sequences: list[Sequence], bad: set[tuple[str, int]] = frozenset()) -> tuple[Windows, int]:
    """Windows t-3..t for t in [start+3, end]; those touching a bad frame are dropped. -> (windows, dropped)."""
    seq_idx, ts, dropped = [], [], 0
    for i, seq in enumerate(sequences):
        for t in range(seq.start + WINDOW - 1, seq.end + 1):
            if any((seq.folder, u) in bad for u in range(t - WINDOW + 1, t + 1)):
                dropped += 1
                continue
            seq_idx.append(i)
            ts.append(t)
    return Windows(np.asarray(seq_idx, dtype=np.int64), np.asarray(ts, dtype=np.int64)), dropped


class ClipDataset(Dataset):
    """4-frame windows read as slices of a decoded cache (or decoded on the fly when `cache` is None)."""

    def __init__(self, sequences: list[Sequence], windows: Windows, labels: dict[str, dict[str, int]],
                 cache: FrameCache | None = None, root: Path | None = None, image_size: int | None = None,
                 backgrounds: dict[str, np.ndarray] | None = None):
        self.sequences, self.windows, self.labels = sequences, windows, labels
        self.cache, self.root, self.image_size = cache, root, image_size
        self.backgrounds = backgrounds or {}  # folder -> the image removed from its frames (data.background)

    def __len__(self) -> int:
        return len(self.windows.t)

    def __getitem__(self, i: int) -> dict[str, Any]:
        seq = self.sequences[int(self.windows.seq[i])]
        t = int(self.windows.t[i])
        if self.cache is not None:
            clip = np.array(self.cache.window(seq, t))  # a copy: the cache is read-only
        else:
            clip = np.stack([decode_frame(seq.frame_path(self.root, u), self.image_size)
                             for u in range(t - WINDOW + 1, t + 1)])
        clip = remove_background(clip, self.backgrounds.get(seq.folder))
        return {"clip": torch.from_numpy(clip),  # [4, S, S, 3] uint8
                "object": self.labels["object"][seq.object], "sensor": self.labels["sensor"][seq.sensor],
                "clip_id": clip_id(seq.folder, t), "index": i}


class TactileDataModule(L.LightningDataModule):
    def __init__(self, root: str, index: str, image_size: int, batch_size: int = 32, val_batch_size: int | None = None,
                 num_workers: int = 0, pin_memory: bool | str = "auto", label_regex: str | None = None,
                 on_bad_frames: str = "error", cache_dir: str | None = None, split: dict | None = None,
                 synthetic: dict | None = None, seed: int = 0, drop_last: bool = True, cache_workers: int | None = None,
                 allow_outside_root: bool = False, background: str = "none"):
        super().__init__()
        if on_bad_frames not in ("error", "skip"):
            raise DataError(f"data.on_bad_frames must be 'error' or 'skip'; got {on_bad_frames!r}")
        self.root, self.index = Path(root), Path(index)
        self.image_size, self.batch_size = int(image_size), int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        if pin_memory == "auto":  # pinned pages let Lightning copy batches to the GPU without blocking
            pin_memory = torch.cuda.is_available()
        self.num_workers, self.pin_memory = num_workers, bool(pin_memory)
        self.label_regex = label_regex or DEFAULT_LABEL_REGEX  # null in the config: the TacQuad folder names
        self.on_bad_frames, self.seed, self.drop_last = on_bad_frames, int(seed), drop_last
        self.cache_dir = Path(cache_dir) if cache_dir else self.root / ".physiotouch_cache"
        self.split_cfg = build_settings(SplitConfig, split, "data.split")
        self.synthetic = build_settings(SynthConfig, synthetic, "data.synthetic", out=str(self.root)) if synthetic \
            else None
        self.cache_workers = cache_workers
        self.allow_outside_root = bool(allow_outside_root)
        self.background = check_background(background)
        self.medians: dict[str, np.ndarray] = {}  # sensor -> the train split's no-contact median (sensor_median)
        self.datasets: dict[str, ClipDataset] = {}
        self.record: dict | None = None
        self.dropped_windows = 0

    # ------------------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.synthetic is not None:
            ensure_synthetic(self.synthetic)

    def _fail(self, problems: list[IndexProblem], what: str) -> None:
        shown = "\n  ".join(str(p) for p in problems[:SHOW_PROBLEMS])
        more = f"\n  ... and {len(problems) - SHOW_PROBLEMS} more" if len(problems) > SHOW_PROBLEMS else ""
        raise DataError(f"{what}: {len(problems)} problem(s)\n  {shown}{more}\n"
                        f"List them all with: python -m physiotouch.data check --root {self.root} --index "
                        f"{self.index}\nor drop the affected windows with data.on_bad_frames=skip")

    def setup(self, stage: str | None = None) -> None:
        if self.record is not None:
            return
        if not self.root.is_dir():
            raise DataError(f"data root '{self.root}' does not exist; set data.root=DIR (TacQuad layout: "
                            f"DIR/<folder>/<t>.png) or use data=synthetic")
        sequences, problems = read_index(self.index, self.label_regex)
        if problems:
            # A malformed row can hide a whole sequence from the split; never train around it silently.
            self._fail(problems, f"index '{self.index}' has malformed rows")
        if not self.allow_outside_root:
            outside = outside_root(self.root, sequences, str(self.index))
            if outside:
                self._fail(outside, f"index '{self.index}' lists folders outside the data root")
        splits = split_sequences(sequences, self.split_cfg)
        version = data_version(self.root, self.index, sequences)
        self.record = splits_record(splits, self.split_cfg, version, str(self.root), str(self.index))
        self.labels = {"object": {k: i for i, k in enumerate(sorted({s.object for s in sequences}))},
                       "sensor": {k: i for i, k in enumerate(sorted({s.sensor for s in sequences}))}}
        self.record["labels"] = {k: sorted(v, key=v.get) for k, v in self.labels.items()}
        self.splits = splits
        for name in ("train", "val"):  # never "test"; train first: its sensor medians serve every split
            self.datasets[name] = self._build(name, splits[name], version)
        self.record["windows_used"] = {k: len(v) for k, v in self.datasets.items()}
        self.record["dropped_windows"] = self.dropped_windows

    def _build(self, name: str, sequences: list[Sequence], version: str) -> ClipDataset:
        if not sequences:
            return ClipDataset([], Windows(np.zeros(0, np.int64), np.zeros(0, np.int64)), self.labels)
        problems = quick_check(self.root, sequences, str(self.index))  # stat only: fails fast, before decoding
        if problems and self.on_bad_frames == "error":
            self._fail(problems, f"the {name} split's frames")
        # Skip mode with problems: sequences whose frames are mostly absent are dropped before decoding.
        present = [s for s in sequences if self._worth_decoding(s)] if problems else sequences
        cache = build_cache(self.root, present, self.image_size, self.cache_dir, version, self.cache_workers,
                            log=log.info)
        bad = {(f, t) for f, t, _ in cache.bad}
        if cache.bad and self.on_bad_frames == "error":
            self._fail([IndexProblem(str(self.root / f / f"{t}.png"), None, why) for f, t, why in cache.bad],
                       f"the {name} split's frames")
        if name == "train" and self.background == "sensor_median":
            self.medians = sensor_medians(present, lambda s: cache.window(s, s.start + WINDOW - 1)[0])
        backgrounds = self._backgrounds(present, lambda s: cache.window(s, s.start + WINDOW - 1)[0])
        windows, dropped = make_windows(present, bad)
        if dropped or len(present) < len(sequences):
            log.warning("%s split: dropped %d window(s) touching %d bad frame(s) and %d missing folder(s) "
                        "(data.on_bad_frames=skip)", name, dropped, len(bad), len(sequences) - len(present))
        self.dropped_windows += dropped
        return ClipDataset(present, windows, self.labels, cache, backgrounds=backgrounds)

    def _backgrounds(self, sequences: list[Sequence], first_frame) -> dict[str, np.ndarray]:
        return {s.folder: bg for s in sequences
                if (bg := background_of(self.background, s, first_frame, self.medians)) is not None}

    def _worth_decoding(self, seq: Sequence) -> bool:
        """Skip mode: a missing folder, or a range that lists many more frames than the folder holds (an end-frame
        typo), drops the whole sequence instead of allocating cache rows for frames that are not there."""
        _, first_missing, present = missing_frames(self.root, seq, str(self.index))
        claimed = seq.end - seq.start + 1
        if not present or (first_missing and claimed > 2 * len(present) + 16):
            log.warning("%s:%d: dropped sequence %s (%d of %d listed frames present; data.on_bad_frames=skip)",
                        self.index, seq.line, seq.folder, len(present), claimed)
            return False
        return True

    # ------------------------------------------------------------------------------------------------------
    def _loader(self, name: str, shuffle: bool, batch_size: int, drop_last: bool) -> DataLoader:
        ds = self.datasets[name]
        if len(ds) == 0:
            raise DataError(f"the {name} split has no windows; check data.split fractions and the data")
        if name == "train" and len(ds) < batch_size:  # a cut batch would train at a rate scaled for the full one
            raise DataError(f"data.batch_size={batch_size} is larger than the train split's {len(ds)} windows: the "
                            f"learning rate is scaled for {batch_size}; set data.batch_size={len(ds)} or less")
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        # A seeded sampler (Lightning calls set_epoch): the order of epoch e depends only on (seed, e), so a run
        # resumed from last.ckpt sees the same batches as an uninterrupted one.
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed,
                                     drop_last=False)
        return DataLoader(ds, batch_size=min(batch_size, len(ds)), sampler=sampler, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, drop_last=drop_last and len(ds) >= batch_size,
                          persistent_workers=self.num_workers > 0, worker_init_fn=seed_worker)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size, self.drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.val_batch_size, False)

    def release_test_dataset(self) -> ClipDataset:
        """The test split, decoded directly (no cache). Only the release command may call this."""
        self.setup()
        seqs = self.splits["test"]
        problems = [p for seq in seqs for p in check_sequence_frames(self.root, seq, str(self.index))]
        if problems:
            self._fail(problems, "the test split's frames")
        windows, _ = make_windows(seqs)
        first = lambda s: decode_frame(s.frame_path(self.root, s.start), self.image_size)  # noqa: E731
        return ClipDataset(seqs, windows, self.labels, None, self.root, self.image_size,
                           self._backgrounds(seqs, first))


def seed_worker(worker_id: int) -> None:
    """Workers only slice arrays (no randomness), but seed them anyway so user extensions stay reproducible."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    import random

    random.seed(seed)
