"""A synthetic tactile data set in exactly the TacQuad layout (index CSV + `folder/<t>.png`), built from a seed.

Each sequence is one object pressed on one sensor, rendered like a vision-based tactile sensor: the object's
contact geometry indents the gel, and coloured lights from fixed directions shade the indentation by its slope
(the photometric principle of GelSight-type sensors). What makes it worth learning from:
- per sensor: its own base colour, light directions and colours, illumination gradient and vignetting, gel
  texture, noise level; the GelSight-like sensor carries a grid of black marker dots that move with the gel;
- per object: one of 12 contact geometries (sphere, edge, cylinder, ridged, dotted, flat, ring, cross,
  pyramid, wave, hexagon, ellipsoid) with an object-specific size;
- over frames: smooth motion (press/release, slide, rotate, one per sequence), so frame 4 of a window follows
  from frames 1-3 but is never a copy of frame 3;
- per object and sensor: `sequences` contact sequences, each at its own position, angle and depth, with the
  motions taken in turn so every object is pressed, slid and rotated (rotation-symmetric shapes slide instead).
  `labels.csv` beside `index.csv` holds each sequence's attributes (`LABEL_COLUMNS`): motion, peak depth, shape
  and surface; `trajectory.csv` the per-frame truth (contact x, y, angle, depth; data/trajectory.py), from which
  each window's own motion, depth, travel and rotation are derived for the probes.
Everything derives from `seed` (numpy's PCG64 per sequence), so the same arguments give the same bytes.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from physiotouch.cli import ConfigError
from physiotouch.utils.files import default_file_mode
from physiotouch.utils.progress import progress

from .trajectory import TRAJECTORY_FILE, write_trajectory

GEOMETRIES = ("sphere", "edge", "cylinder", "ridged", "dotted", "flat", "ring", "cross", "pyramid", "wave",
              "hexagon", "ellipsoid")
MOTIONS = ("press", "slide", "rotate")
PATTERNED = {"ridged", "dotted", "wave", "cross"}  # surfaces with a repeating relief; the rest are smooth
# Turning these about their centre changes nothing a sensor can see: they are never given the `rotate` motion
# (a sequence labelled `rotate` that looks like a press would teach a probe noise).
ROTATION_SYMMETRIC = {"sphere", "flat", "ring"}
LABEL_COLUMNS = ("folder", "motion", "peak_depth", "shape", "surface")
GENERATOR_VERSION = 2  # 2: trajectory.csv, no rotation of rotation-symmetric shapes (a set of version 1 is remade)


@dataclass(frozen=True)
class SensorLook:
    base: tuple[float, float, float]
    light_dirs: tuple[tuple[float, float], ...]  # unit-ish (x, y) direction of each light
    light_colors: tuple[tuple[float, float, float], ...]
    gradient: tuple[float, float, float]  # colour added across the image from left to right
    vignette: float
    texture: float
    noise: float
    markers: bool
    gain: float


SENSORS: dict[str, SensorLook] = {
    # GelSight-like: dark gel, red/green/blue lights from three sides, black markers.
    "gelsight": SensorLook((0.30, 0.30, 0.33), ((-1.0, 0.0), (0.5, -0.87), (0.5, 0.87)),
                           ((0.9, 0.15, 0.1), (0.1, 0.85, 0.2), (0.15, 0.2, 0.95)), (0.06, 0.0, -0.04), 0.25, 0.01,
                           0.012, True, 1.6),
    # DIGIT-like: bright, LEDs from below, strong colour gradient, smooth gel.
    "digit": SensorLook((0.52, 0.50, 0.56), ((-0.7, 0.7), (0.0, 1.0), (0.7, 0.7)),
                        ((0.95, 0.2, 0.2), (0.2, 0.9, 0.25), (0.2, 0.3, 0.95)), (0.12, -0.05, 0.05), 0.15, 0.005,
                        0.015, False, 2.2),
    # DuraGel-like: pale, lit from above with white light, speckled gel, soft contrast.
    "duragel": SensorLook((0.62, 0.56, 0.66), ((0.0, -1.0), (-0.6, -0.8)),
                          ((0.7, 0.7, 0.7), (0.35, 0.3, 0.45)), (-0.03, 0.04, 0.06), 0.1, 0.05, 0.02, False, 1.1),
}


@dataclass
class SynthConfig:
    # Fields the code sets from another config key, never the config itself (Hydra's node leaves them out).
    SET_BY_CODE: ClassVar[dict[str, str]] = {"out": "data.root"}
    out: str
    num_objects: int = 12
    sensors: list[str] = field(default_factory=lambda: list(SENSORS))
    frames: int = 48
    width: int = 96
    height: int = 72
    seed: int = 0
    sequences: int = 1  # contact sequences per object and sensor

    def signature(self) -> str:
        d = asdict(self)
        d.pop("out")
        d["generator"] = GENERATOR_VERSION
        return f"{zlib.crc32(json.dumps(d, sort_keys=True).encode()):08x}"


def object_names(num_objects: int) -> list[tuple[str, str]]:
    """(object name, geometry): geometries cycle, so more than 12 objects get size variants (sphere2, ...)."""
    out = []
    for i in range(num_objects):
        geo = GEOMETRIES[i % len(GEOMETRIES)]
        out.append((geo if i < len(GEOMETRIES) else f"{geo}{i // len(GEOMETRIES) + 1}", geo))
    return out


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def shape_height(geo: str, u: np.ndarray, v: np.ndarray, size: float) -> np.ndarray:
    """Object surface height in [0, 1] at object-frame coordinates (u, v); `size` scales the footprint."""
    u, v = u / size, v / size
    r = np.sqrt(u**2 + v**2)
    disk = _smoothstep((0.75 - r) / 0.1)
    if geo == "sphere":
        return np.sqrt(np.clip(0.5**2 - r**2, 0, None)) / 0.5
    if geo == "ellipsoid":
        return np.sqrt(np.clip(1 - (u / 0.65) ** 2 - (v / 0.28) ** 2, 0, None))
    if geo == "edge":
        return np.clip(1 - np.abs(u) / 0.12, 0, None) * _smoothstep((0.9 - np.abs(v)) / 0.1)
    if geo == "cylinder":
        return np.sqrt(np.clip(1 - (u / 0.3) ** 2, 0, None)) * _smoothstep((0.85 - np.abs(v)) / 0.1)
    if geo == "ridged":
        return (0.5 + 0.5 * np.cos(2 * np.pi * u * 3.0)) * disk
    if geo == "dotted":
        gu, gv = (u * 3.0) % 1.0 - 0.5, (v * 3.0) % 1.0 - 0.5
        return np.clip(1 - (gu**2 + gv**2) / 0.09, 0, None) * disk
    if geo == "flat":
        return _smoothstep((0.55 - r) / 0.12)
    if geo == "ring":
        return np.exp(-((r - 0.45) ** 2) / 0.006)
    if geo == "cross":
        bar = lambda a, b: np.clip(1 - np.abs(a) / 0.1, 0, None) * _smoothstep((0.7 - np.abs(b)) / 0.1)  # noqa: E731
        return np.maximum(bar(u, v), bar(v, u))
    if geo == "pyramid":
        return np.clip(1 - np.maximum(np.abs(u), np.abs(v)) / 0.5, 0, None)
    if geo == "wave":
        return (0.5 + 0.25 * (np.sin(6 * u) + np.sin(6 * v))) * disk
    if geo == "hexagon":
        d = np.maximum.reduce([np.abs(u * np.cos(a) + v * np.sin(a)) for a in (0, np.pi / 3, 2 * np.pi / 3)])
        return _smoothstep((0.5 - d) / 0.08)
    raise ConfigError(f"unknown geometry {geo!r}")


def _trajectory(motion: str, frames: int, rng: np.random.Generator, varied: bool = False) -> dict[str, np.ndarray]:
    """Per-frame contact centre (x, y), angle and depth; smooth, so frame t+1 follows from frames t-2..t.
    `varied` (several sequences per object): depths over a wider range and motions twice as fast, so that the
    depth and the motion of a sequence show within one 4-frame window (the attributes its probes are asked for)."""
    t = np.arange(frames, dtype=np.float64)
    press_in = _smoothstep(t / max(3.0, 0.2 * frames))
    cx0, cy0 = rng.uniform(-0.25, 0.25, size=2)
    angle0 = rng.uniform(0, np.pi)
    depth = rng.uniform(0.3 if varied else 0.6, 1.0) * press_in
    pace = 2.0 if varied else 1.0
    cx, cy, angle = np.full(frames, cx0), np.full(frames, cy0), np.full(frames, angle0)
    if motion == "press":  # press and partly release, again and again
        period = rng.uniform(0.35, 0.6) * frames / pace
        depth = depth * (0.65 + 0.35 * np.cos(2 * np.pi * t / period))
    elif motion == "slide":  # constant velocity, bouncing between the gel's edges
        speed = rng.uniform(0.02, 0.04) * pace
        heading = rng.uniform(0, 2 * np.pi)
        span = 0.35
        for arr, comp, start in ((cx, np.cos(heading), cx0), (cy, np.sin(heading), cy0)):
            pos = start + span + speed * comp * t  # reflect into [0, 2·span]
            pos = np.abs((pos % (4 * span)) - 2 * span)
            arr[:] = span - pos
    elif motion == "rotate":
        angle = angle0 + rng.uniform(0.06, 0.12) * pace * rng.choice([-1, 1]) * t
    return {"x": cx, "y": cy, "angle": angle, "depth": depth}


def _blur(img: np.ndarray, passes: int = 2) -> np.ndarray:
    """A cheap separable [1,2,1]/4 blur repeated: the gel spreads an indentation a little."""
    for _ in range(passes):
        img = (np.roll(img, 1, 0) + 2 * img + np.roll(img, -1, 0)) / 4
        img = (np.roll(img, 1, 1) + 2 * img + np.roll(img, -1, 1)) / 4
    return img


def render_sequence(geo: str, size: float, sensor: str, motion: str, cfg: SynthConfig,
                    rng: np.random.Generator) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """-> (cfg.frames uint8 RGB images [height, width, 3], the contact trajectory: cx, cy, angle, depth per frame)."""
    look = SENSORS[sensor]
    h, w = cfg.height, cfg.width
    ys, xs = np.meshgrid(np.linspace(-1, 1, h) * (h / w), np.linspace(-1, 1, w), indexing="ij")
    # Fixed per sensor (its own RNG), so the gel's texture and illumination identify the sensor.
    sensor_rng = np.random.default_rng(zlib.crc32(sensor.encode()) + cfg.seed)
    texture = _blur(sensor_rng.normal(0, 1, (h, w)), 1) * look.texture
    illum = np.array(look.base)[None, None] + xs[..., None] * np.array(look.gradient)[None, None] * 0.5
    illum = illum * (1 - look.vignette * (xs**2 + ys**2)[..., None] / 2)
    marker_grid = np.stack(np.meshgrid(np.linspace(-0.85, 0.85, 8), np.linspace(-0.62, 0.62, 6)), -1).reshape(-1, 2)
    traj = _trajectory(motion, cfg.frames, rng, varied=cfg.sequences > 1)
    frames = []
    for i in range(cfg.frames):
        ca, sa = np.cos(traj["angle"][i]), np.sin(traj["angle"][i])
        dx, dy = xs - traj["x"][i], ys - traj["y"][i]
        u, v = ca * dx + sa * dy, -sa * dx + ca * dy
        height = _blur(shape_height(geo, u, v, size) * traj["depth"][i])
        gy, gx = np.gradient(height, 2.0 / h, 2.0 / w)
        img = illum.copy()
        for (lx, ly), color in zip(look.light_dirs, look.light_colors):
            img += look.gain * 0.08 * (gx * lx + gy * ly)[..., None] * np.array(color)[None, None]
        img += 0.12 * height[..., None] * np.array(look.base)[None, None]  # contact area brightens a little
        img += texture[..., None]
        if look.markers:
            img = _draw_markers(img, marker_grid, height, traj, i, xs, ys)
        img += rng.normal(0, look.noise, img.shape)
        frames.append((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    return frames, traj


def _draw_markers(img, grid, height, traj, i, xs, ys):
    """Black dots that move with the gel: dragged along with the slide inside the contact, pushed out by pressing."""
    h, w = height.shape
    drag = np.array([traj["x"][i] - traj["x"][0], traj["y"][i] - traj["y"][0]])
    for mx, my in grid:
        row = int(np.clip((my / ((h / w)) + 1) / 2 * (h - 1), 0, h - 1))
        col = int(np.clip((mx + 1) / 2 * (w - 1), 0, w - 1))
        contact = min(1.0, height[row, col] * 3)
        push = np.array([mx - traj["x"][i], my - traj["y"][i]]) * 0.15 * contact
        px, py = np.array([mx, my]) + 0.4 * contact * drag + push
        dot = (xs - px) ** 2 + (ys - py) ** 2 < (0.035**2)
        img[dot] *= 0.15
    return img


def generate(cfg: SynthConfig) -> Path:
    """Write the data set into cfg.out (index.csv + one folder per sequence); atomic: a half-written set never
    appears under cfg.out. Returns the path of index.csv."""
    unknown = set(cfg.sensors) - set(SENSORS)
    if unknown:
        raise ConfigError(f"unknown sensor(s) {sorted(unknown)}; built-in sensors: {sorted(SENSORS)}")
    if cfg.frames < 4:
        raise ConfigError("frames must be >= 4 (one 4-frame window)")
    out = Path(cfg.out)
    if out.exists() and not (out / "synthetic.json").is_file() and (not out.is_dir() or any(out.iterdir())):
        # Only a set this generator wrote (or an empty folder) is ever replaced: data.root may come from a config
        # someone else wrote, and must never make us delete a user's folder.
        from physiotouch.data.index import DataError

        raise DataError(f"refusing to write the synthetic data set into '{out}': it exists and is not a synthetic "
                        f"set made by physiotouch; choose another folder (data.root / --out)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(default_file_mode(folder=True))  # mkdtemp makes 0700: the set gets the user's normal permissions
    try:
        rows, labels, truth = [], [], []
        todo = [(k, name, geo, s, sensor, j) for k, (name, geo) in enumerate(object_names(cfg.num_objects))
                for s, sensor in enumerate(cfg.sensors) for j in range(cfg.sequences)]
        for k, name, geo, s, sensor, j in progress(todo, len(todo), "rendering sequences"):
            gran = "fine" if k % 2 == 0 else "coarse"
            size = float(np.random.default_rng([cfg.seed, k]).uniform(0.75, 1.1))
            if cfg.sequences == 1:  # the original layout: one sequence, its motion drawn
                rng = np.random.default_rng([cfg.seed, k, s, 1])
                motion, folder = MOTIONS[int(rng.integers(len(MOTIONS)))], f"data_{gran}_{name}_{sensor}"
            else:  # motions in turn, so each object has every motion; the sequence number rides on the granularity
                rng = np.random.default_rng([cfg.seed, k, s, 1, j])
                motion, folder = MOTIONS[(k + s + j) % len(MOTIONS)], f"data_{gran}-s{j}_{name}_{sensor}"
            if motion == "rotate" and geo in ROTATION_SYMMETRIC:
                motion = "slide"
            (tmp / folder).mkdir()
            frames, traj = render_sequence(geo, size, sensor, motion, cfg, rng)
            for t, frame in enumerate(frames):
                Image.fromarray(frame).save(tmp / folder / f"{t}.png", compress_level=1)
            rows.append((folder, 0, cfg.frames - 1))
            truth.append((folder, traj))
            labels.append((folder, motion, f"{float(traj['depth'].max()):.4f}", geo,
                           "patterned" if geo in PATTERNED else "smooth"))
        with (tmp / "index.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)
        with (tmp / "labels.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows([LABEL_COLUMNS, *labels])
        write_trajectory(tmp / TRAJECTORY_FILE, truth)
        (tmp / "synthetic.json").write_text(json.dumps({**asdict(cfg), "signature": cfg.signature()}, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.csv"


def _complete(cfg: SynthConfig) -> bool:
    meta = Path(cfg.out) / "synthetic.json"
    try:
        return json.loads(meta.read_text()).get("signature") == cfg.signature()
    except (OSError, ValueError):
        return False


def ensure_synthetic(cfg: SynthConfig) -> Path:
    """Generate the set into cfg.out unless a complete one with the same settings is already there. Processes
    started together (DDP ranks, parallel sweeps) generate it once: the first holds a file lock, the others wait
    for it and then find the set complete."""
    from physiotouch.utils.locks import FolderLock

    out = Path(cfg.out)
    if _complete(cfg):
        return out / "index.csv"
    with FolderLock(out.parent / f".{out.name}.lock", "the synthetic data folder", wait=True):
        if not _complete(cfg):
            logging.getLogger(__name__).info("generating the built-in synthetic data set into %s (once)", cfg.out)
            generate(cfg)
    return out / "index.csv"
