"""Per-frame ground truth beside the index: `trajectory.csv` (optional; the built-in generator writes it).

A header row, then one row per frame of every sequence folder of the index:
    folder,frame,x,y,angle,depth
    data_fine-s0_sphere_gelsight,0,0.1234,-0.0567,1.5708,0.0000
x, y: the contact centre (image half-widths, origin at the centre); angle: the object's orientation (radians);
depth: the indentation (0 = no contact). `frame` is the frame number of the file name `<frame>.png`.

A probe sees one window, so its targets must describe that window, not the sequence (`labels.csv`'s `peak_depth`
is the sequence's maximum, which a window often does not show). `window_targets` derives, from exactly the frames
the encoder sees (t-3, t-2, t-1 of the window ending at t), the window's motion (none / press / release / slide /
rotate), its mean depth (the force task of tactile benchmarks), its travel and its rotation.
`python -m physiotouch.data check` validates the file.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .index import DataError, IndexProblem, body_rows, read_beside_index

TRAJECTORY_FILE = "trajectory.csv"
COLUMNS = ("folder", "frame", "x", "y", "angle", "depth")
MAX_BYTES = 256 * 2**20
WINDOW_TARGETS = ("motion", "depth", "travel", "rotation")  # probe names: window_<target>
NUMERIC_TARGETS = ("depth", "travel", "rotation")
# What counts as visible motion over the two frame steps the encoder sees (units as in the file). Below
# CONTACT_DEPTH nothing touches the gel: no motion can show.
CONTACT_DEPTH, MIN_TRAVEL, MIN_ROTATION, MIN_DEPTH_CHANGE = 0.05, 0.03, 0.1, 0.04


def trajectory_path(index: str | Path) -> Path:
    return Path(index).with_name(TRAJECTORY_FILE)


def write_trajectory(path: Path, rows: list[tuple[str, dict[str, np.ndarray]]]) -> None:
    """rows: (folder, {x, y, angle, depth: per-frame arrays}) -> trajectory.csv."""
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(COLUMNS)
        for folder, traj in rows:
            for t in range(len(traj["depth"])):
                out.writerow([folder, t, *(f"{float(traj[k][t]):.5f}" for k in ("x", "y", "angle", "depth"))])


def read_trajectory(index: str | Path, folders: list[str]) -> tuple[dict[str, np.ndarray], list[IndexProblem]]:
    """-> ({folder: array [frames, 4] of x, y, angle, depth indexed by frame number (NaN where a frame has no row)},
    one problem per bad row or folder without rows). No file: ({}, [])."""
    path = trajectory_path(index)
    if not path.exists():
        return {}, []
    rows = read_beside_index(path, MAX_BYTES)
    if not rows or tuple(c.strip() for c in rows[0]) != COLUMNS:
        raise DataError(f"'{path}': the first row must be the header {','.join(COLUMNS)}")
    known, values, problems = set(folders), {}, []
    for line, (folder, frame, *numbers) in body_rows(rows, len(COLUMNS), path, problems):
        if folder not in known:
            problems.append(IndexProblem(str(path), line, f"folder {folder!r} is not in the index"))
            continue
        try:
            t, point = int(frame), [float(v) for v in numbers]
        except ValueError:
            problems.append(IndexProblem(str(path), line, "frame must be an integer and x, y, angle, depth numbers"))
            continue
        if t < 0 or t > 10**6 or not all(math.isfinite(v) for v in point):
            problems.append(IndexProblem(str(path), line, "frame must be 0..1000000 and x, y, angle, depth finite"))
        elif (folder, t) in values:
            problems.append(IndexProblem(str(path), line, f"frame {t} of {folder!r} is listed twice"))
        else:
            values[folder, t] = point
    frames: dict[str, dict[int, list]] = {}
    for (folder, t), point in values.items():
        frames.setdefault(folder, {})[t] = point
    out = {}
    for folder, by_frame in frames.items():
        arr = np.full((max(by_frame) + 1, 4), np.nan)
        for t, point in by_frame.items():
            arr[t] = point
        out[folder] = arr
    missing = [f for f in folders if f not in out]
    if out and missing:
        problems.append(IndexProblem(str(path), None, f"{len(missing)} sequence folder(s) of the index have no rows, "
                                                      f"e.g. {missing[0]!r}"))
    return out, problems


def window_targets(traj: np.ndarray, t: int) -> dict | None:
    """The targets of the window ending at frame t, from the frames the encoder sees (t-3..t-1); None when one of
    them has no row. Motion: none below contact depth; else slide if the centre travels, rotate if the object
    turns, press / release if the depth changes, none otherwise (checked in that order)."""
    if t - 1 >= len(traj) or t < 3:
        return None
    seen = traj[t - 3:t]
    if np.isnan(seen).any():
        return None
    travel = float(np.linalg.norm(np.diff(seen[:, :2], axis=0), axis=1).sum())
    rotation = float(abs(seen[-1, 2] - seen[0, 2]))
    depth_change = float(seen[-1, 3] - seen[0, 3])
    depth = float(seen[:, 3].mean())
    if depth < CONTACT_DEPTH:  # nothing touches the gel: no travel or turn can show
        return {"motion": "none", "depth": depth, "travel": 0.0, "rotation": 0.0}
    if travel >= MIN_TRAVEL:
        motion = "slide"
    elif rotation >= MIN_ROTATION:
        motion = "rotate"
    elif abs(depth_change) >= MIN_DEPTH_CHANGE:
        motion = "press" if depth_change > 0 else "release"
    else:
        motion = "none"
    return {"motion": motion, "depth": depth, "travel": travel, "rotation": rotation}
