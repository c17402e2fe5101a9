"""Decode every frame once into a resized uint8 array on disk, memory-mapped; a window is then a slice.

The reference decodes 4 PNGs for every window, and windows overlap 4x, so each frame is decoded about 4 times per
epoch. Here a split's frames are decoded once, resized to image_size, and stored as one `.npy` of
[frames, S, S, 3] uint8 beside a small JSON layout. The file name holds a key over the data version, the image
size and the sequences it covers; the data version covers the data root and every frame's name, size and
modification time, so a changed frame (or another root) gives another cache. Processes that start together
(DDP ranks, parallel sweeps) build a cache once under a file lock; the others wait and read it.
Files are written to a temporary name and renamed, so an interrupted build never leaves a half cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from physiotouch.utils.files import atomic_write_text, default_file_mode
from physiotouch.utils.locks import FolderLock
from physiotouch.utils.progress import progress

from .frames import decode_frame
from .index import WINDOW, Sequence


@dataclass
class FrameCache:
    frames: np.ndarray  # [N, S, S, 3] uint8, memory-mapped
    offsets: dict[str, int]  # sequence folder -> row of its start frame
    bad: list[tuple[str, int, str]] = field(default_factory=list)  # (folder, t, why) of frames that failed to decode
    path: Path | None = None

    def window(self, seq: Sequence, t: int) -> np.ndarray:
        """Frames t-3..t of `seq` -> [4, S, S, 3] (a view, no copy)."""
        first = self.offsets[seq.folder] + (t - (WINDOW - 1) - seq.start)
        return self.frames[first:first + WINDOW]


def cache_key(version: str, image_size: int, sequences: list[Sequence]) -> str:
    h = hashlib.sha256(f"{version}:{image_size}:".encode())
    for seq in sorted(sequences, key=lambda s: s.folder):
        h.update(f"{seq.folder},{seq.start},{seq.end};".encode())
    return h.hexdigest()[:16]


def _decode_or_fail(path: Path, size: int):
    try:
        return decode_frame(path, size), None
    except Exception as err:  # noqa: BLE001 - any decoding failure is one bad frame, reported by name
        return None, f"{type(err).__name__}: {str(err)[:120]}"


def build_cache(root: Path, sequences: list[Sequence], image_size: int, cache_dir: Path, version: str,
                workers: int | None = None, log=print) -> FrameCache:
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(version, image_size, sequences)
    with FolderLock(cache_dir / f".frames-{key}.lock", "the frame cache", wait=True):
        return _load_or_build(root, sequences, image_size, cache_dir, version, key, workers, log)


def _load_or_build(root: Path, sequences: list[Sequence], image_size: int, cache_dir: Path, version: str, key: str,
                   workers: int | None, log) -> FrameCache:
    array_path, layout_path = cache_dir / f"frames-{key}.npy", cache_dir / f"frames-{key}.json"
    if array_path.is_file() and layout_path.is_file():
        try:
            layout = json.loads(layout_path.read_text())
            frames = np.load(array_path, mmap_mode="r")
            return FrameCache(frames, layout["offsets"], [tuple(b) for b in layout["bad"]], array_path)
        except (ValueError, OSError, KeyError, json.JSONDecodeError):
            log(f"cache {array_path} is unreadable; rebuilding it")

    offsets, total = {}, 0
    for seq in sequences:
        offsets[seq.folder] = total
        total += seq.end - seq.start + 1
    jobs = [(seq, t, offsets[seq.folder] + t - seq.start) for seq in sequences for t in seq.frames]
    log(f"decoding {total} frames of {len(sequences)} sequences once into {array_path.name} "
        f"({total * image_size * image_size * 3 / 2**20:.0f} MiB)")
    fd, tmp = tempfile.mkstemp(prefix=f".{array_path.name}.", suffix=".tmp", dir=cache_dir)
    os.fchmod(fd, default_file_mode())  # mkstemp makes 0600: caches are shared by the user's other processes
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total, image_size, image_size, 3))
        bad = []
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            results = pool.map(lambda job: _decode_or_fail(job[0].frame_path(root, job[1]), image_size), jobs)
            for (seq, t, row), (img, err) in progress(zip(jobs, results), len(jobs), f"decoding {total} frames"):
                if err is None:
                    out[row] = img
                else:
                    out[row] = 0
                    bad.append((seq.folder, t, err))
        out.flush()
        del out
        os.replace(tmp, array_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(layout_path, json.dumps({"offsets": offsets, "bad": bad, "version": version,
                                                "image_size": image_size, "root": str(Path(root).resolve())}))
    _remove_stale(cache_dir, keep=key, version=version, sequences={s.folder for s in sequences}, root=root)
    return FrameCache(np.load(array_path, mmap_mode="r"), offsets, bad, array_path)


def _remove_stale(cache_dir: Path, keep: str, version: str, sequences: set[str], root: Path) -> None:
    """Drop caches of an older data version of the same data root that covered the same sequences (they can
    never be used again). Caches of other roots, or written before roots were recorded, are left alone."""
    for layout_path in cache_dir.glob("frames-*.json"):
        if layout_path.stem.endswith(keep):
            continue
        try:
            layout = json.loads(layout_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        same_root = layout.get("root") == str(Path(root).resolve())
        if same_root and layout.get("version") != version and set(layout.get("offsets", {})) == sequences:
            layout_path.with_suffix(".npy").unlink(missing_ok=True)
            layout_path.unlink(missing_ok=True)
