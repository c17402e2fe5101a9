"""One pass over a split: unmasked features for the probes and per-clip reconstruction errors (fixed masks).

Per-clip errors are the model's own per-clip losses (`TactileVideoMAE.per_clip_losses`, `objective`): static,
recon, pred, the objective and the error of each frame position; beside them the baselines scored on the same
patches, among them the "copy shortcut": frame 3 copied as the prediction of frame 4 (the roadmap's warning).
"""

from __future__ import annotations

import torch

from physiotouch.data.augment import normalize, to_float_clips
from physiotouch.data.datamodule import ClipDataset
from physiotouch.models import TactileVideoMAE

ERRORS = ("static", "recon", "pred", "copy_frame3")  # the per-clip errors the reports show per object and sensor


def per_clip_errors(model: TactileVideoMAE, out: dict) -> dict[str, torch.Tensor]:
    """Per clip: the model's errors on exactly the patches each loss scores, and two baselines on the same patches.

    - copy last visible frame: frame 3 as the guess of frame 4 (`copy_frame3`, the shortcut the roadmap warns of).
      The masked patches of frames 1-3 are masked in all three (tube masking), so no visible frame exists there.
    - mean frame: each masked patch of frames 1-3 guessed as the mean of that frame's visible patches
      (`mean_static`, `mean_recon`); frame 4 guessed as the mean of frames 1-3 at each patch (`mean_pred`).
    - input-matched copies of frame 3 as frame 4, seeing only what the model sees: the model's own reconstruction
      of frame 3 (`copy_own_frame3`: does it extrapolate motion, or copy?) and the visible frame-3 patches, each
      masked one guessed as their mean (`copy_visible_frame3`). `copy_frame3` uses all 16 patches of frame 3,
      more than the model sees: a reference, not a fair control.
    """
    target = out["target"]  # [B, L, 4, V], as the pass `out` (forward_video) scored it
    losses = model.per_clip_losses(target, out["pred"], out["mask"])
    m = out["mask"]
    masked = lambda e: (e * m).sum(1) / m.sum(1)  # noqa: E731 - [B, L] -> [B]
    err = model.patch_errors  # the loss's own formula: (target, guess) [..., V] -> [...]
    copy = err(target[:, :, 3], target[:, :, 2]).mean(1)  # frame 3 as the guess of frame 4
    visible = (1 - m)[:, :, None, None]  # [B, L, 1, 1]
    visible_mean = (target[:, :, :3] * visible).sum(1, keepdim=True) / visible.sum(1, keepdim=True)  # [B, 1, 3, V]
    mean_err = err(target[:, :, :3], visible_mean)  # [B, L, 3]
    mean_pred = err(target[:, :, 3], target[:, :, :3].mean(2)).mean(1)
    # Input-matched guesses of frame 4: what the model could copy from what it sees or makes of frame 3
    own = err(target[:, :, 3], out["pred"][:, :, 2]).mean(1)
    seen = visible[..., 0]  # [B, L, 1]
    frame3 = target[:, :, 2] * seen + visible_mean[:, :, 2] * (1 - seen)  # visible patches, else their mean
    copy_visible = err(target[:, :, 3], frame3).mean(1)
    frames = losses["frame_errors"]  # [B, 4]
    return {"static": losses["loss_static"], "recon": losses["loss_recon"], "pred": losses["loss_pred"],
            "objective": model.objective(losses), **{f"frame{i + 1}": frames[:, i] for i in range(4)},
            "copy_frame3": copy, "mean_static": masked(mean_err[:, :, 0]), "mean_recon": masked(mean_err.mean(-1)),
            "mean_pred": mean_pred, "copy_own_frame3": own, "copy_visible_frame3": copy_visible}


def per_clip_objective(model: TactileVideoMAE, out: dict) -> dict[str, torch.Tensor]:
    """Per clip: the model's objective alone, as `per_clip_errors` gives it (the robustness sweep reports nothing else
    under a perturbation)."""
    return {"objective": model.objective(model.per_clip_losses(out["target"], out["pred"], out["mask"]))}


@torch.no_grad()
def example_outputs(model: TactileVideoMAE, ds: ClipDataset, indices: list[int], mask_ratio: float,
                    device: str = "cpu") -> dict[str, torch.Tensor]:
    """Inputs, masks and predictions of a few clips (for the picture panels), recomputed rather than kept."""
    batch = [ds[i] for i in indices]
    clips = normalize(to_float_clips(torch.stack([b["clip"] for b in batch]).to(device)))
    ids = torch.tensor([b["clip_id"] for b in batch])
    out = model.eval().to(device).forward_video(clips, model.fixed_mask_noise(ids, model.num_patches).to(device),
                                                mask_ratio=mask_ratio)
    return {"clips": clips.cpu(), "pred": out["pred"].float().cpu(), "mask": out["mask"].cpu()}
