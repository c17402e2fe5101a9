"""Data pipeline throughput, side by side in one run on the same data: the reference's style vs ours.

reference style: every window decodes its 4 PNGs, resizes each to image_size, converts to float and applies the
    random flip / colour jitter / normalisation per sample, inside the loader (a torchvision-transform Dataset).
ours: every frame decoded once into a memory-mapped uint8 cache (built once, its cost printed separately), a
    window read as a slice; augmentation and normalisation run on whole batches on the training device.
Two figures, both on one thread (torch.set_num_threads(1), no loader workers), so per core:
  loader: the work a loader worker does per sample (for ours, the augmentation has moved to the device that
          trains, a GPU in practice, where it costs next to nothing);
  end-to-end on this CPU: ours including the batched augmentation run on the CPU (when the CPU trains).
The same augmentation code runs in both pipelines (per sample in the reference style, batched in ours).

    python benchmarks/data_throughput.py [--image-size 224] [--windows 300] [--src-width 320 --src-height 240]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from physiotouch.data.augment import augment_clips, normalize, to_float_clips
from physiotouch.data.cache import build_cache
from physiotouch.data.datamodule import ClipDataset, make_windows
from physiotouch.data.index import WINDOW, read_index
from physiotouch.data.settings import AugmentConfig
from physiotouch.data.splits import data_version
from physiotouch.data.synthetic import SynthConfig, generate


class ReferenceStyleDataset(torch.utils.data.Dataset):
    """Decodes the 4 PNGs of a window on every access and transforms that one sample."""

    def __init__(self, root: Path, sequences, windows, image_size: int):
        self.root, self.sequences, self.windows, self.size = root, sequences, windows, image_size
        self.gen = torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return len(self.windows.t)

    def __getitem__(self, i: int) -> torch.Tensor:
        seq, t = self.sequences[int(self.windows.seq[i])], int(self.windows.t[i])
        frames = []
        for u in range(t - WINDOW + 1, t + 1):
            with Image.open(seq.frame_path(self.root, u)) as img:
                img = img.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
            frames.append(torch.from_numpy(np.asarray(img)))
        clip = to_float_clips(torch.stack(frames)[None])  # one sample: [1, 4, 3, S, S]
        return normalize(augment_clips(clip, AugmentConfig(), self.gen))[0]


def run_reference(ds: ReferenceStyleDataset, n: int, batch: int) -> float:
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0)
    start, seen = time.perf_counter(), 0
    for clips in loader:
        seen += clips.shape[0]
        if seen >= n:
            break
    return seen / (time.perf_counter() - start)


def run_ours(ds: ClipDataset, n: int, batch: int, augment_on_cpu: bool) -> float:
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0)
    gen = torch.Generator().manual_seed(0)
    start, seen = time.perf_counter(), 0
    while seen < n:
        for b in loader:
            if augment_on_cpu:
                normalize(augment_clips(to_float_clips(b["clip"]), AugmentConfig(), gen))
            seen += b["clip"].shape[0]
            if seen >= n:
                break
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--windows", type=int, default=300, help="windows timed per pipeline")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--src-width", type=int, default=320, help="frame size on disk (DIGIT/GelSight Mini: 320x240)")
    parser.add_argument("--src-height", type=int, default=240)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        generate(SynthConfig(out=str(root), num_objects=4, frames=30, width=args.src_width, height=args.src_height))
        sequences, _ = read_index(root / "index.csv")
        windows, _ = make_windows(sequences)
        print(f"data: {len(sequences)} sequences, {len(windows.t)} windows, frames {args.src_width}x"
              f"{args.src_height} PNG -> {args.image_size} px; one thread; batch {args.batch}")

        start = time.perf_counter()
        cache = build_cache(root, sequences, args.image_size, Path(tmp) / "cache",
                            data_version(root, root / "index.csv", sequences), workers=1, log=lambda *_: None)
        build_s = time.perf_counter() - start
        ours_ds = ClipDataset(sequences, windows, {"object": {s.object: 0 for s in sequences},
                                                   "sensor": {s.sensor: 0 for s in sequences}}, cache)
        ref_ds = ReferenceStyleDataset(root, sequences, windows, args.image_size)

        run_ours(ours_ds, args.batch, args.batch, True)  # warm-up (page cache, allocator)
        ref = run_reference(ref_ds, args.windows, args.batch)
        loader = run_ours(ours_ds, args.windows * 20, args.batch, False)
        cpu = run_ours(ours_ds, args.windows, args.batch, True)
        frames = sum(s.end - s.start + 1 for s in sequences)
        print(f"one-time cache build: {build_s:.1f} s for {frames} frames ({frames / build_s:.0f} frames/s)")
        print(f"reference style (decode 4 PNGs per window, per-sample transforms): {ref:9.1f} samples/s")
        print(f"physiotouch loader (cache slice; transforms on the training device): {loader:9.1f} samples/s")
        print(f"physiotouch end-to-end on this CPU (slice + batched CPU transforms): {cpu:9.1f} samples/s")
        print(f"ratio, loader work per core:        {loader / ref:.1f}x")
        print(f"ratio, end-to-end on this CPU:      {cpu / ref:.1f}x")


if __name__ == "__main__":
    main()
