"""The hand-made contact-feature control: what a tactile engineer computes without learning anything.

From exactly the frames the encoder sees (1-3 of each window), pooled to SIDE×SIDE:
1. the sensor's no-contact background removed: per sensor, the pixel-wise median of the first frame of every
   recording (windows that start at their sequence's first frame; recordings start before contact), falling
   back to the median of all its frames; no label is read;
2. a contact map per frame: |frame − background| summed over colours, less its median (the gel's noise floor);
3. per frame: log contact energy, the centroid (x, y), the spread and the orientation as second moments
   (xx + yy, xx − yy, 2xy); per step: their changes, the centroid's travel and the orientation's turn (of the
   doubled angle, so a bar turned by π is unchanged); per window: total travel and turn.
It stands beside every attribute probe as its ceiling control: tuned like the others (evaluation/tuned.py), it
reads what the probes are asked (motion, depth, travel, rotation) almost directly, so a representation that falls
far below it has room to learn.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from physiotouch.models.mae import NUM_INPUT_FRAMES

SIDE = 28


def pooled_frames(clips: torch.Tensor, side: int) -> torch.Tensor:
    """Clips [B, T, 3, S, S] -> the frames the encoder sees, average-pooled to side×side [B, 3·3·side²]."""
    frames = clips[:, :NUM_INPUT_FRAMES].flatten(0, 1)  # [B·3, 3, S, S]
    return F.adaptive_avg_pool2d(frames, side).reshape(clips.shape[0], -1)


def contact_features(frames: np.ndarray, sensors: np.ndarray, first: np.ndarray) -> np.ndarray:
    """`pooled_frames(clips, SIDE)` [N, 3·3·SIDE²], each clip's sensor [N] and whether its window starts at its
    recording's first frame [N] -> hand-made contact features [N, 48]."""
    frames = frames.reshape(len(frames), NUM_INPUT_FRAMES, 3, SIDE, SIDE)
    maps = np.empty((len(frames), NUM_INPUT_FRAMES, SIDE, SIDE), np.float32)
    for s in np.unique(sensors):
        sel = sensors == s
        quiet = frames[sel & first, 0] if (sel & first).any() else frames[sel].reshape(-1, 3, SIDE, SIDE)
        background = np.median(quiet, axis=0)
        maps[sel] = np.abs(frames[sel] - background).sum(2)
    maps = np.maximum(maps - np.median(maps, axis=(2, 3), keepdims=True), 0)
    ys, xs = np.meshgrid(np.linspace(-1, 1, SIDE), np.linspace(-1, 1, SIDE), indexing="ij")
    mass = maps.sum((2, 3)) + 1e-6  # [N, 3]
    cx, cy = (maps * xs).sum((2, 3)) / mass, (maps * ys).sum((2, 3)) / mass
    dx, dy = xs - cx[..., None, None], ys - cy[..., None, None]
    vxx, vyy, vxy = ((maps * d).sum((2, 3)) / mass for d in (dx * dx, dy * dy, dx * dy))
    per_frame = np.stack([np.log(mass), cx, cy, vxx + vyy, vxx - vyy, 2 * vxy], -1)  # [N, 3, 6]
    steps = np.diff(per_frame, axis=1)  # [N, 2, 6]
    travel = np.hypot(steps[..., 1], steps[..., 2])  # [N, 2]
    doubled = np.arctan2(per_frame[..., 5], per_frame[..., 4])
    turn = np.abs(np.angle(np.exp(1j * np.diff(doubled, axis=1))))  # [N, 2]
    return np.concatenate([per_frame.reshape(len(frames), -1), steps.reshape(len(frames), -1),
                           np.abs(steps).reshape(len(frames), -1), travel, turn,
                           travel.sum(1, keepdims=True), turn.sum(1, keepdims=True)], 1).astype(np.float32)
