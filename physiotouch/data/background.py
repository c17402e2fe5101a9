"""An optional input with the sensor's no-contact background removed (`data.background`).

A vision-based tactile sensor shows its gel, lights and markers whether or not anything touches it; the contact is
a small change on top. Removing a no-contact image leaves the contact alone:
- `none` (default): the frames as recorded (the reference's input);
- `first_frame`: each sequence's first frame (recordings start before contact) subtracted from its frames;
- `sensor_median`: per sensor, the pixel-wise median of the first frames of the *train* split's sequences
  (a noise-free background; the validation and test splits use the train split's, never their own).
The result stays uint8 (128 + frame − background, clipped), so the loader, the augmentation and the model see the
same kind of input either way, and the evaluation's controls see exactly what the encoder sees.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .index import DataError, Sequence

BACKGROUNDS = ("none", "first_frame", "sensor_median")


def check_background(mode: str) -> str:
    if mode not in BACKGROUNDS:
        raise DataError(f"data.background must be one of {', '.join(BACKGROUNDS)}; got {mode!r}")
    return mode


def sensor_medians(train: list[Sequence], first_frame: Callable[[Sequence], np.ndarray]) -> dict[str, np.ndarray]:
    """{sensor: median first frame [S, S, 3] uint8} over the train split's sequences of each sensor."""
    by_sensor: dict[str, list[np.ndarray]] = {}
    for seq in train:
        by_sensor.setdefault(seq.sensor, []).append(np.asarray(first_frame(seq)))
    return {s: np.median(np.stack(frames), axis=0).round().astype(np.uint8) for s, frames in by_sensor.items()}


def background_of(mode: str, seq: Sequence, first_frame: Callable[[Sequence], np.ndarray],
                  medians: dict[str, np.ndarray]) -> np.ndarray | None:
    """The image removed from `seq`'s frames, or None for `none`."""
    if mode == "none":
        return None
    if mode == "first_frame":
        return np.array(first_frame(seq))
    if seq.sensor not in medians:
        raise DataError(f"data.background=sensor_median: the train split has no sequence of sensor {seq.sensor!r}; "
                        f"use data.background=first_frame")
    return medians[seq.sensor]


def remove_background(clip: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """uint8 [T, S, S, 3] -> uint8 128 + clip − background (clipped to 0..255); unchanged without a background."""
    if background is None:
        return clip
    diff = clip.astype(np.int16) - background.astype(np.int16)[None] + 128
    return np.clip(diff, 0, 255).astype(np.uint8)
