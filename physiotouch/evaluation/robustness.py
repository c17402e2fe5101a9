"""Inference-time perturbations of clips in [0, 1], the same for the 4 frames of a clip, seeded by the clip."""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F

from physiotouch.cli import ConfigError
from physiotouch.data.index import WINDOW

from .settings import DEFAULT_STRENGTHS


@functools.cache
def _resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """[n_out, n_in]: antialiased bilinear resizing of one axis as a matrix (interpolating the identity), so that a
    crop or zoom of a whole batch is two matrix products instead of an image resampling per clip (about 2x faster here,
    the same values within 1e-6)."""
    eye = torch.eye(n_in)[None, None]
    return F.interpolate(eye, size=(n_out, n_in), mode="bilinear", align_corners=False, antialias=True)[0, 0]


def _crop_matrix(size: int, side: int, offset: int) -> torch.Tensor:
    """[size, size]: keep `side` pixels from `offset` along an axis, resized back to `size` (a crop at a place drawn
    per clip; the centre crop slices its pixels first, and resizes only them)."""
    m = torch.zeros(size, size)
    m[:, offset:offset + side] = _resize_matrix(side, size)
    return m


def _apply(clips: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """rows @ image @ colsᵀ for every frame and colour; rows, cols [S, S] (every clip) or [B, S, S] (per clip)."""
    if rows.dim() == 3:
        rows, cols = rows[:, None, None], cols[:, None, None]
    return rows.to(clips) @ clips @ cols.to(clips).transpose(-1, -2)


def _generator(clip_id: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(clip_id) + 7919)


def clip_noise(shape: tuple, clip_ids: torch.Tensor) -> torch.Tensor:
    """One standard-normal image sequence per clip [B, T, C, H, W], seeded by the clip."""
    return torch.stack([torch.randn(shape[1:], generator=_generator(cid)) for cid in clip_ids.tolist()])


def make_perturbation(kind: str, strength: float) -> Callable[..., torch.Tensor]:
    """-> apply(clips [B, T, C, S, S] in [0, 1], clip ids [B], shared=None): `shared`, a dict per batch, lets the
    perturbations of one batch reuse their per-clip draws (the noise image is the same at every strength)."""

    def apply(clips: torch.Tensor, clip_ids: torch.Tensor, shared: dict | None = None) -> torch.Tensor:
        size = clips.shape[-1]
        if kind in ("center_crop", "random_crop"):
            side = max(2, int(round(size * strength)))
            if kind == "center_crop":  # the kept pixels alone, resized: a product over `side` pixels, not `size`
                start, grow = (size - side) // 2, _resize_matrix(side, size)
                return _apply(clips[..., start:start + side, start:start + side], grow, grow)
            offsets = [[int(v) for v in torch.randint(0, size - side + 1, (2,), generator=_generator(cid))]
                       for cid in clip_ids.tolist()]  # (top, left) per clip
            rows = torch.stack([_crop_matrix(size, side, top) for top, _ in offsets])
            cols = torch.stack([_crop_matrix(size, side, left) for _, left in offsets])
            return _apply(clips, rows, cols)
        if kind == "scale":  # shrink to `side`, then pad by repeating the border rows and columns
            side = max(2, int(round(size * strength)))
            shrink, before = _resize_matrix(size, side), (size - side) // 2
            small = _apply(clips, shrink, shrink)  # [..., side, side]
            pads = (before, size - side - before) * 2
            return F.pad(small.flatten(0, -4), pads, mode="replicate").view(*clips.shape)
        if kind == "noise":
            shared = {} if shared is None else shared
            if "noise" not in shared:
                shared["noise"] = clip_noise((len(clips), WINDOW, *clips.shape[2:]), clip_ids)
            noise = shared["noise"][:, :clips.shape[1]]  # the same draw whether a clip comes with 3 frames or 4
            return (clips + strength * noise.to(clips.device)).clamp(0, 1)
        if kind == "brightness":
            return (clips * strength).clamp(0, 1)
        raise ConfigError(f"unknown perturbation {kind!r}; known: {sorted(DEFAULT_STRENGTHS)}")

    apply.kind, apply.strength, apply.label = kind, strength, f"{kind}_{strength:g}"
    # crops and zooms average pixels with weights summing to 1, so they commute with a per-channel affine map (the
    # encoder's normalisation); noise and brightness clip to [0, 1] and do not
    apply.commutes_with_normalize = kind in ("center_crop", "random_crop", "scale")
    return apply
