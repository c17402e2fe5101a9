"""Inference-time perturbations of clips in [0, 1], the same for the 4 frames of a clip, seeded by the clip."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from physiotouch.cli import ConfigError

DEFAULT_STRENGTHS = {
    "center_crop": [0.9, 0.8, 0.7],  # fraction of the side kept, then resized back
    "random_crop": [0.9, 0.8, 0.7],
    "scale": [0.9, 0.8, 0.7],  # zoom out: shrink by the factor, pad with the border
    "noise": [0.02, 0.05, 0.1],  # Gaussian sigma, in [0, 1] pixel units
    "brightness": [0.7, 0.85, 1.15, 1.3],  # multiplicative factor
}


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    b, t, c, h, w = x.shape
    y = F.interpolate(x.reshape(b * t, c, h, w), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=True)
    return y.reshape(b, t, c, size, size)


def _generator(clip_id: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(clip_id) + 7919)


def make_perturbation(kind: str, strength: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def apply(clips: torch.Tensor, clip_ids: torch.Tensor) -> torch.Tensor:
        size = clips.shape[-1]
        if kind in ("center_crop", "random_crop"):
            side = max(2, int(round(size * strength)))
            out = []
            for clip, cid in zip(clips, clip_ids.tolist()):
                if kind == "center_crop":
                    top = left = (size - side) // 2
                else:
                    top, left = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=_generator(cid)))
                out.append(clip[..., top:top + side, left:left + side])
            return _resize(torch.stack(out), size)
        if kind == "scale":
            side = max(2, int(round(size * strength)))
            small = _resize(clips, side)
            pad = size - side
            b, t, c = clips.shape[:3]
            flat = F.pad(small.reshape(b * t, c, side, side), (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2),
                         mode="replicate")
            return flat.reshape(b, t, c, size, size)
        if kind == "noise":
            noise = torch.stack([torch.randn(clips.shape[1:], generator=_generator(cid)) for cid in clip_ids.tolist()])
            return (clips + strength * noise.to(clips.device)).clamp(0, 1)
        if kind == "brightness":
            return (clips * strength).clamp(0, 1)
        raise ConfigError(f"unknown perturbation {kind!r}; known: {sorted(DEFAULT_STRENGTHS)}")

    apply.label = f"{kind}_{strength:g}"
    return apply
