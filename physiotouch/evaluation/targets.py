"""What the attribute probes are asked, per pooled clip, and which of them cannot be asked here (and why).

- Sequence attributes from `labels.csv` (`eval.probe.attributes`: motion, peak_depth, surface): one value for every
  window of a sequence; real data sets often have only these.
- Window targets from `trajectory.csv` (`eval.probe.window_targets`: motion, depth, travel, rotation), named
  `window_<target>`: derived from exactly the frames the encoder sees (data/trajectory.py), so the label describes
  what the probe sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from physiotouch.data.labels import LABELS_FILE, NUMERIC, read_labels
from physiotouch.data.trajectory import NUMERIC_TARGETS, TRAJECTORY_FILE, read_trajectory, window_targets

from .settings import ProbeConfig


@dataclass
class Target:
    values: list  # per pooled clip; None where the clip has no value
    numeric: bool  # a regression (R², MAE) rather than classes


def clip_targets(index: str | Path, pooled: dict, cfg: ProbeConfig) -> tuple[dict[str, Target], list[str]]:
    """-> ({probe name: Target}, one line per probe that cannot run here, saying why)."""
    folders = sorted(set(pooled["folder"].tolist()))
    labels = read_labels(index, folders)[0]
    trajectory = read_trajectory(index, folders)[0]
    out, missing = {}, []
    if cfg.attributes and not labels:
        missing.append(f"{', '.join(cfg.attributes)}: the data set has no {LABELS_FILE} (per-sequence attributes)")
    if cfg.window_targets and not trajectory:
        missing.append(f"{', '.join('window_' + t for t in cfg.window_targets)}: the data set has no "
                       f"{TRAJECTORY_FILE} (per-frame truth)")
    if labels:
        for attr in cfg.attributes:
            out[attr] = Target([labels.get(f, {}).get(attr) for f in pooled["folder"]], attr in NUMERIC)
    if trajectory:
        windows = [window_targets(trajectory[f], int(t)) if f in trajectory else None
                   for f, t in zip(pooled["folder"], pooled["t"])]
        for target in cfg.window_targets:
            out[f"window_{target}"] = Target([None if w is None else w[target] for w in windows],
                                             target in NUMERIC_TARGETS)
    return out, missing


def as_array(target: Target) -> tuple[np.ndarray, list | None]:
    """-> (per-clip targets: floats with NaN where missing, or class ids with -1; the class names or None)."""
    if target.numeric:
        return np.array([np.nan if v is None else float(v) for v in target.values]), None
    classes = sorted({v for v in target.values if v is not None})
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(v, -1) for v in target.values]), classes
