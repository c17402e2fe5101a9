"""Clip augmentation on batched tensors, on whichever device trains.

The reference draws one random transform per clip and applies it to all 4 frames: horizontal flip (p=0.5),
vertical flip (p=0.5), colour jitter (brightness 0.4, contrast 0.4, saturation 0.5, hue 0.3, in a random order
per clip, as torchvision's ColorJitter), then ImageNet normalisation. Written here because torchvision cannot be
installed beside this torch build, and because its transforms work per sample on the CPU while this runs once
per batch on the GPU. Randomness comes from an explicit generator, so a step's augmentation is reproducible.
"""

from __future__ import annotations

import torch

from .settings import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma weights, as torchvision's rgb_to_grayscale


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


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of RGB images x [..., 3, H, W] by `shift` (in turns), keeping saturation and value.

    The same result as RGB -> HSV -> (h + shift) mod 1 -> RGB (torchvision's adjust_hue), computed directly:
    with v = max, m = min, d = v - m and h6 = 6·hue, channel k = v - d·clamp(min(K, 4 - K), 0, 1) where
    K = (n_k + h6 + 6·shift) mod 6 and n = 5, 3, 1 for R, G, B. No HSV tensor is built, which makes it several
    times cheaper on the CPU.
    """
    r, g, b = x.unbind(dim=-3)
    v = torch.maximum(torch.maximum(r, g), b)
    d = v - torch.minimum(torch.minimum(r, g), b)
    inv = d.clamp_min(1e-12).reciprocal_()
    h6 = torch.where(v == r, (g - b).mul_(inv), torch.where(v == g, (b - r).mul_(inv).add_(2.0),
                                                             (r - g).mul_(inv).add_(4.0)))
    h6.add_(6.0 * shift)
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(h6 + n, 6.0)
        weight = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
        out.append(v - d * weight)
    return torch.stack(out, dim=-3)


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
    return shift_hue(x, f[:, :, 0])  # hue: rotate the hue circle


def augment_clips(clips: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator,
                  chunk: int | None = None) -> torch.Tensor:
    """clips [B, T, 3, H, W] in [0, 1] -> the same with one random transform per clip, shared by its T frames.

    All random draws are made for the whole batch first, so the result does not depend on `chunk`: the number
    of clips transformed together (default: all on a GPU; 1 on a CPU, where passes over a whole batch of 224 px
    clips are bound by memory bandwidth and one clip at a time stays in cache, about 3x faster).
    """
    if not cfg.enabled:
        return clips
    b, dev = clips.shape[0], clips.device
    chunk = chunk or (b if clips.is_cuda else 1)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(b, device=dev, generator=generator)

    flip_h = torch.rand(b, device=dev, generator=generator) < cfg.hflip
    flip_v = torch.rand(b, device=dev, generator=generator) < cfg.vflip
    factors = [uniform(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness),
               uniform(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast),
               uniform(max(0.0, 1 - cfg.saturation), 1 + cfg.saturation),
               uniform(-cfg.hue, cfg.hue)]
    active = [cfg.brightness > 0, cfg.contrast > 0, cfg.saturation > 0, cfg.hue > 0]
    order = torch.argsort(torch.rand(b, 4, device=dev, generator=generator), dim=1)  # ColorJitter's random order
    out = []
    for start in range(0, b, chunk):
        part = slice(start, start + chunk)
        x = clips[part]
        x = torch.where(flip_h[part].view(-1, 1, 1, 1, 1), x.flip(-1), x)
        x = torch.where(flip_v[part].view(-1, 1, 1, 1, 1), x.flip(-2), x)
        for position in range(4):
            for op in range(4):
                if not active[op]:
                    continue
                sel = (order[part, position] == op).nonzero(as_tuple=True)[0]
                if sel.numel() == x.shape[0]:  # the whole chunk (always so for one clip): no gather/scatter
                    x = _adjust(x, op, factors[op][part])
                elif sel.numel():
                    x[sel] = _adjust(x[sel], op, factors[op][part][sel])
        out.append(x)
    return torch.cat(out) if len(out) > 1 else out[0]
