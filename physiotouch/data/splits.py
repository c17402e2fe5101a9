"""Leak-free splits by object group, and the data version id.

TacQuad presses the same object on every sensor, so clips of one object are near-duplicates across sensors: a
split by clip or by sequence would put the same object in train and test. Here a whole object group (every
sequence of one object, on every sensor) lies in exactly one of train / val / test.

`exclude`: groups left out of every split (e.g. the objects an earlier release tested: a later model must neither
train nor select on them). The fractions apply to the groups that remain.

K-fold: the test groups are fixed by the split seed first; the remaining groups are dealt into k folds, and fold
i is the validation set (the rest train). Every group is in exactly one validation fold.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from physiotouch.cli import ConfigError
from physiotouch.utils.settings import finite, require

from .index import DataError, Sequence
from .labels import labels_path
from .trajectory import trajectory_path

SPLITS = ("train", "val", "test")


@dataclass
class SplitConfig:
    val_fraction: float = 0.17
    test_fraction: float = 0.17
    seed: int = 0
    k_folds: int = 0  # 0 or 1: a single train/val split; >= 2: K-fold over the non-test groups
    fold: int = 0
    group_by: str = "object"
    exclude: list = field(default_factory=list)  # groups in no split

    def validate(self) -> None:
        for key in ("val_fraction", "test_fraction"):
            v = getattr(self, key)
            require(finite(v) and 0 <= v < 1, f"data.split.{key}", v, "a number in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("data.split: val_fraction + test_fraction must be below 1 (train needs the rest)")
        require(self.k_folds >= 0, "data.split.k_folds", self.k_folds, "0 (one split) or the number of folds >= 2")
        if self.k_folds >= 2:
            require(0 <= self.fold < self.k_folds, "data.split.fold", self.fold, f"in [0, {self.k_folds})")


def _count(n: int, fraction: float) -> int:
    return 0 if fraction <= 0 else max(1, int(round(n * fraction)))


def assign_groups(groups: list[str], cfg: SplitConfig) -> dict[str, list[str]]:
    """Deterministic from cfg.seed and the sorted group names (`cfg` as `build_settings` made it: validated).
    -> {'train': [...], 'val': [...], 'test': [...]}."""
    unknown = sorted(set(cfg.exclude) - set(groups))
    if unknown:
        raise DataError(f"data.split.exclude names {unknown}, which are not {cfg.group_by} groups of this data set")
    order = sorted(set(groups) - set(cfg.exclude))
    random.Random(cfg.seed).shuffle(order)
    n = len(order)
    n_test = _count(n, cfg.test_fraction)
    test, rest = order[:n_test], order[n_test:]
    if cfg.k_folds and cfg.k_folds >= 2:
        if len(rest) < cfg.k_folds:
            raise DataError(f"data.split.k_folds={cfg.k_folds} needs at least that many non-test groups; "
                            f"there are {len(rest)}")
        folds = [rest[i::cfg.k_folds] for i in range(cfg.k_folds)]
        val = folds[cfg.fold]
        train = [g for i, f in enumerate(folds) if i != cfg.fold for g in f]
    else:
        n_val = _count(n, cfg.val_fraction)
        val, train = rest[:n_val], rest[n_val:]
    if not train:
        raise DataError(f"the split leaves no training group ({n} {cfg.group_by} groups in all); "
                        f"lower data.split.val_fraction / test_fraction or add data")
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def split_sequences(sequences: list[Sequence], cfg: SplitConfig) -> dict[str, list[Sequence]]:
    if cfg.group_by not in ("object", "sensor", "granularity"):
        raise DataError(f"data.split.group_by must be object, sensor or granularity; got {cfg.group_by!r}")
    groups = assign_groups([getattr(s, cfg.group_by) for s in sequences], cfg)
    where = {g: split for split, gs in groups.items() for g in gs}
    out: dict[str, list[Sequence]] = {k: [] for k in SPLITS}
    for seq in sequences:
        if getattr(seq, cfg.group_by) in where:  # excluded groups are in no split
            out[where[getattr(seq, cfg.group_by)]].append(seq)
    return out


def data_version(root: str | Path, index: str | Path, sequences: list[Sequence]) -> str:
    """Hash over the data root, the bytes of the index and of labels.csv and trajectory.csv beside it, and the frame
    files (name, size, modification time, and inode change time) of every sequence folder: a frame replaced by other
    bytes, or the same names under another root, is another version (and gets another cache).

    Only directory entries are read (os.scandir + stat), never a frame's content, so computing the version opens
    no test frame. The change time (ctime) is what makes that enough: `cp -p` or `rsync -t` can put the old mtime
    back on new content, but nothing but the kernel sets ctime, and any write moves it. An unlistable folder
    enters the hash as such.
    """
    root = Path(root)
    h = hashlib.sha256(f"root={root.resolve()}\n".encode())
    h.update(Path(index).read_bytes())
    labels = labels_path(index)  # the evaluation's attribute labels are data too
    h.update(b"\n[labels.csv]" + (labels.read_bytes() if labels.is_file() else b"<none>"))
    truth = trajectory_path(index)  # and so is the per-frame truth the window probes are scored against
    h.update(b"\n[trajectory.csv]" + (truth.read_bytes() if truth.is_file() else b"<none>"))
    for folder in sorted({s.folder for s in sequences}):
        h.update(f"\n[{folder}]".encode())
        try:
            with os.scandir(root / folder) as it:
                entries = sorted((e.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns) for e in it
                                 if e.name.endswith(".png") and (st := e.stat()))
        except OSError:
            h.update(b"<unlistable>")
            continue
        for name, size, mtime, ctime in entries:
            h.update(f"{name}:{size}:{mtime}:{ctime};".encode())
    return h.hexdigest()[:16]


def splits_record(splits: dict[str, list[Sequence]], cfg: SplitConfig, version: str, root: str, index: str) -> dict:
    """The content of `splits.json`."""
    return {
        "data_version": version,
        "root": str(root),
        "index": str(index),
        "split": {"val_fraction": cfg.val_fraction, "test_fraction": cfg.test_fraction, "seed": cfg.seed,
                  "k_folds": cfg.k_folds, "fold": cfg.fold, "group_by": cfg.group_by},
        "groups": {k: sorted({getattr(s, cfg.group_by) for s in v}) for k, v in splits.items()},
        "sequences": {k: [s.folder for s in v] for k, v in splits.items()},
        "windows": {k: sum(s.num_windows for s in v) for k, v in splits.items()},
    }

