"""One pass over a split: unmasked features for the probes and per-clip reconstruction errors (fixed masks).

Per-clip errors follow the training losses, per sample: static (frame 1, masked patches), recon (frames 1-3, masked
patches), pred (frame 4, all patches), the error of each frame position, and the "copy shortcut" baseline: frame 3
copied as the prediction of frame 4 (the shortcut the reference's roadmap warns of).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from physiotouch.data.augment import normalize, to_float_clips
from physiotouch.data.datamodule import ClipDataset, fixed_mask_noise
from physiotouch.models import TactileVideoMAE


def per_clip_errors(model: TactileVideoMAE, clips: torch.Tensor, out: dict) -> dict[str, torch.Tensor]:
    target = model.targets(clips)  # [B, L, 4, V]
    err = ((out["pred"].float() - target) ** 2).mean(dim=-1)  # [B, L, 4]
    m = out["mask"]
    masked = lambda e: (e * m).sum(1) / m.sum(1)  # noqa: E731 - [B, L] -> [B]
    copy = ((target[:, :, 2] - target[:, :, 3]) ** 2).mean(dim=(-1, -2))  # frame 3 as the guess of frame 4
    return {"static": masked(err[:, :, 0]), "recon": masked(err[:, :, :3].mean(-1)), "pred": err[:, :, 3].mean(1),
            "frame1": masked(err[:, :, 0]), "frame2": masked(err[:, :, 1]), "frame3": masked(err[:, :, 2]),
            "frame4": err[:, :, 3].mean(1), "copy_frame3": copy}


@torch.no_grad()
def encode_split(model: TactileVideoMAE, ds: ClipDataset, batch_size: int, mask_ratio: float,
                 perturb: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 device: str = "cpu", limit: int | None = None) -> dict:
    """-> {'x': features [N, P], 'object', 'sensor', 't', 'start', 'end', 'clip_id', 'index', per-clip errors}."""
    model.eval().to(device)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    rows: dict[str, list] = {}
    seen = 0
    for batch in loader:
        clips = to_float_clips(batch["clip"].to(device))
        if perturb is not None:
            clips = perturb(clips, batch["clip_id"])
        clips = normalize(clips)
        noise = fixed_mask_noise(batch["clip_id"], model.num_patches).to(device)
        out = model.forward_video(clips, noise, mask_ratio=mask_ratio)
        values = {"x": model.encode(clips, "video"), **per_clip_errors(model, clips, out)}
        for key, v in values.items():
            rows.setdefault(key, []).append(v.float().cpu().numpy())
        for key in ("object", "sensor", "clip_id", "index"):
            rows.setdefault(key, []).append(batch[key].numpy())
        seen += len(clips)
        if limit and seen >= limit:
            break
    result = {k: np.concatenate(v) for k, v in rows.items()}
    seqs = [ds.sequences[int(ds.windows.seq[i])] for i in result["index"]]
    result["t"] = ds.windows.t[result["index"]]
    result["start"] = np.array([s.start for s in seqs])
    result["end"] = np.array([s.end for s in seqs])
    result["object_name"] = np.array([s.object for s in seqs])
    result["sensor_name"] = np.array([s.sensor for s in seqs])
    result["folder"] = np.array([s.folder for s in seqs])
    return result


@torch.no_grad()
def example_outputs(model: TactileVideoMAE, ds: ClipDataset, indices: list[int], mask_ratio: float,
                    device: str = "cpu") -> dict[str, torch.Tensor]:
    """Inputs, masks and predictions of a few clips (for the picture panels), recomputed rather than kept."""
    batch = [ds[i] for i in indices]
    clips = normalize(to_float_clips(torch.stack([b["clip"] for b in batch]).to(device)))
    ids = torch.tensor([b["clip_id"] for b in batch])
    out = model.eval().to(device).forward_video(clips, fixed_mask_noise(ids, model.num_patches).to(device),
                                                mask_ratio=mask_ratio)
    return {"clips": clips.cpu(), "pred": out["pred"].float().cpu(), "mask": out["mask"].cpu()}
