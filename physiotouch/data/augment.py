"""Clip augmentation on batched tensors, on whichever device trains.

The reference draws one random transform per clip and applies it to all 4 frames: horizontal flip (p=0.5),
vertical flip (p=0.5), colour jitter (brightness 0.4, contrast 0.4, saturation 0.5, hue 0.3, in a random order
per clip, as torchvision's ColorJitter), then ImageNet normalisation. Written here because torchvision cannot be
installed beside this torch build, and because its transforms work per sample on the CPU while this runs once
per batch on the GPU. Randomness comes from an explicit generator, so a step's augmentation is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma weights, as torchvision's rgb_to_grayscale


@dataclass
class AugmentConfig:
    enabled: bool = True
    hflip: float = 0.5
    vflip: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.5
    hue: float = 0.3


def to_float_clips(batch_uint8: torch.Tensor) -> torch.Tensor:
    """[B, T, H, W, 3] uint8 -> [B, T, 3, H, W] float in [0, 1]."""
    return batch_uint8.permute(0, 1, 4, 2, 3).float().div_(255.0)


def normalize(clips: torch.Tensor) -> torch.Tensor:
    mean = clips.new_tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    std = clips.new_tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    return (clips - mean) / std


def denormalize(clips: torch.Tensor) -> torch.Tensor:
    mean = clips.new_tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    std = clips.new_tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    return clips * std + mean


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] -> [..., 1, H, W]."""
    w = x.new_tensor(GRAY).view(3, 1, 1)
    return (x * w).sum(dim=-3, keepdim=True)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    maxc, minc = x.max(dim=-3).values, x.min(dim=-3).values
    flat = maxc == minc
    delta = maxc - minc
    ones = torch.ones_like(maxc)
    sat = delta / torch.where(flat, ones, maxc)
    div = torch.where(flat, ones, delta)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(flat, torch.zeros_like(hue), hue)
    hue = torch.remainder(hue / 6.0, 1.0)
    return torch.stack([hue, sat, maxc], dim=-3)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(dim=-3)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s * (1 - f))).clamp(0, 1)
    # For each sector i, which of (v, q, p, t) goes to r, g, b.
    table = torch.tensor([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]], device=x.device)
    choices = torch.stack([v, q, p, t], dim=-3)  # [..., 4, H, W]
    idx = table[i].movedim(-1, -3)  # [..., 3, H, W]
    return torch.gather(choices, -3, idx)


def _adjust(x: torch.Tensor, op: int, factor: torch.Tensor) -> torch.Tensor:
    """x [n, T, 3, H, W] in [0, 1]; factor [n] broadcast per clip."""
    f = factor.view(-1, 1, 1, 1, 1)
    if op == 0:  # brightness
        return (x * f).clamp(0, 1)
    if op == 1:  # contrast: blend with the mean grey level of each frame
        mean = grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
        return (f * x + (1 - f) * mean).clamp(0, 1)
    if op == 2:  # saturation: blend with the frame's grey image
        return (f * x + (1 - f) * grayscale(x)).clamp(0, 1)
    hsv = rgb_to_hsv(x)  # hue: rotate the hue circle
    hue = torch.remainder(hsv[:, :, 0] + f[:, :, 0], 1.0)
    return hsv_to_rgb(torch.stack([hue, hsv[:, :, 1], hsv[:, :, 2]], dim=2))


def augment_clips(clips: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """clips [B, T, 3, H, W] in [0, 1] -> the same with one random transform per clip, shared by its T frames."""
    if not cfg.enabled:
        return clips
    b, dev = clips.shape[0], clips.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(b, device=dev, generator=generator)

    flip_h = torch.rand(b, device=dev, generator=generator) < cfg.hflip
    flip_v = torch.rand(b, device=dev, generator=generator) < cfg.vflip
    clips = torch.where(flip_h.view(-1, 1, 1, 1, 1), clips.flip(-1), clips)
    clips = torch.where(flip_v.view(-1, 1, 1, 1, 1), clips.flip(-2), clips)
    factors = [uniform(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness),
               uniform(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast),
               uniform(max(0.0, 1 - cfg.saturation), 1 + cfg.saturation),
               uniform(-cfg.hue, cfg.hue)]
    active = [cfg.brightness > 0, cfg.contrast > 0, cfg.saturation > 0, cfg.hue > 0]
    order = torch.argsort(torch.rand(b, 4, device=dev, generator=generator), dim=1)  # ColorJitter's random order
    for position in range(4):
        for op in range(4):
            if not active[op]:
                continue
            sel = (order[:, position] == op).nonzero(as_tuple=True)[0]
            if sel.numel():
                clips[sel] = _adjust(clips[sel], op, factors[op][sel])
    return clips
