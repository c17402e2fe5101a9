"""One pass over a split: unmasked features for the probes and per-clip reconstruction errors (fixed masks).

Per-clip errors follow the training losses, per sample: static (frame 1, masked patches), recon (frames 1-3, masked
patches), pred (frame 4, all patches), the error of each frame position, and the "copy shortcut" baseline: frame 3
copied as the prediction of frame 4 (the shortcut the reference's roadmap warns of).
"""

from __future__ import annotations

from typing import Callable

import torch

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


def encode_split(model: TactileVideoMAE, ds: ClipDataset, batch_size: int, mask_ratio: float,
                 perturb: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 device: str = "auto", limit: int | None = None, name: str = "split") -> dict:
    """Features and per-clip errors of every clip of `ds` (one `Trainer.predict` pass: `encoder.encode`)."""
    from .encoder import encode

    return encode(model, ds, batch_size, mask_ratio, errors=True, perturb=perturb, device=device, limit=limit,
                  name=name)


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
