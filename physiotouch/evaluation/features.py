"""One pass over a split: unmasked features for the probes and per-clip reconstruction errors (fixed masks).

Per-clip errors follow the training losses, per sample: static (frame 1, masked patches), recon (frames 1-3, masked
patches), pred (frame 4, all patches), the error of each frame position, and the "copy shortcut" baseline: frame 3
copied as the prediction of frame 4 (the shortcut the reference's roadmap warns of).
"""

from __future__ import annotations

import torch

from physiotouch.data.augment import normalize, to_float_clips
from physiotouch.data.datamodule import ClipDataset, fixed_mask_noise
from physiotouch.models import TactileVideoMAE


def per_clip_errors(model: TactileVideoMAE, clips: torch.Tensor, out: dict) -> dict[str, torch.Tensor]:
    """Per clip: the model's errors on exactly the patches each loss scores, and two baselines on the same patches.

    - copy last visible frame: frame 3 as the guess of frame 4 (`copy_frame3`, the shortcut the roadmap warns of).
      The masked patches of frames 1-3 are masked in all three (tube masking), so no visible frame exists there.
    - mean frame: each masked patch of frames 1-3 guessed as the mean of that frame's visible patches
      (`mean_static`, `mean_recon`); frame 4 guessed as the mean of frames 1-3 at each patch (`mean_pred`).
    """
    target = model.targets(clips)  # [B, L, 4, V]
    err = ((out["pred"].float() - target) ** 2).mean(dim=-1)  # [B, L, 4]
    m = out["mask"]
    masked = lambda e: (e * m).sum(1) / m.sum(1)  # noqa: E731 - [B, L] -> [B]
    copy = ((target[:, :, 2] - target[:, :, 3]) ** 2).mean(dim=(-1, -2))  # frame 3 as the guess of frame 4
    visible = (1 - m)[:, :, None, None]  # [B, L, 1, 1]
    visible_mean = (target[:, :, :3] * visible).sum(1, keepdim=True) / visible.sum(1, keepdim=True)  # [B, 1, 3, V]
    mean_err = ((visible_mean - target[:, :, :3]) ** 2).mean(dim=-1)  # [B, L, 3]
    mean_pred = ((target[:, :, :3].mean(2) - target[:, :, 3]) ** 2).mean(dim=(-1, -2))
    return {"static": masked(err[:, :, 0]), "recon": masked(err[:, :, :3].mean(-1)), "pred": err[:, :, 3].mean(1),
            "frame1": masked(err[:, :, 0]), "frame2": masked(err[:, :, 1]), "frame3": masked(err[:, :, 2]),
            "frame4": err[:, :, 3].mean(1), "copy_frame3": copy, "mean_static": masked(mean_err[:, :, 0]),
            "mean_recon": masked(mean_err.mean(-1)), "mean_pred": mean_pred}


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
