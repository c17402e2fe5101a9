"""Find everything wrong with a TacQuad-format data set, each problem with its file (and index line).

`check_dataset` decodes every frame (the `python -m physiotouch.data check` command). Training calls
`quick_check` on the train and validation sequences only (stat, no decoding; decoding errors surface while the
cache is built), so it never touches a test frame.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .index import DEFAULT_LABEL_REGEX, IndexProblem, Sequence, read_index


def decode_frame(path: Path, size: int | None) -> np.ndarray:
    """PNG -> RGB uint8 [size, size, 3] (any mode converted to RGB; bilinear resize like the reference)."""
    with Image.open(path) as img:
        img.load()  # forces the full decode: truncated files raise here, not later in a batch
        rgb = img.convert("RGB")
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def frame_problem(path: Path) -> tuple[str | None, tuple | None]:
    """-> (problem message or None, (width, height, mode) when readable)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing frame", None
    except OSError as err:
        return f"cannot stat frame ({err.strerror})", None
    if size == 0:
        return "zero-byte frame", None
    try:
        with Image.open(path) as img:
            fmt, info = img.format, (img.size[0], img.size[1], img.mode)
            img.load()
    except UnidentifiedImageError:
        return "not a decodable image", None
    except (OSError, SyntaxError, ValueError) as err:
        return f"truncated or corrupt image ({str(err)[:80]})", None
    if fmt != "PNG":
        return f"not a PNG (format {fmt})", info
    return None, info


def quick_check(root: Path, sequences: list[Sequence], index: str) -> list[IndexProblem]:
    """Folders exist and every frame of these sequences exists with a non-zero size (stat only)."""
    problems = []
    for seq in sequences:
        folder = root / seq.folder
        if not folder.is_dir():
            problems.append(IndexProblem(index, seq.line, f"folder '{folder}' does not exist"))
            continue
        for t in seq.frames:
            path = seq.frame_path(root, t)
            try:
                if path.stat().st_size == 0:
                    problems.append(IndexProblem(str(path), None, "zero-byte frame"))
            except OSError:
                problems.append(IndexProblem(str(path), None, f"missing frame (needed by line {seq.line})"))
    return problems


def check_sequence_frames(root: Path, seq: Sequence, index: str) -> list[IndexProblem]:
    folder = root / seq.folder
    if not folder.is_dir():
        return [IndexProblem(index, seq.line, f"folder '{folder}' does not exist")]
    problems, infos = [], {}
    for t in seq.frames:
        path = seq.frame_path(root, t)
        msg, info = frame_problem(path)
        if msg:
            problems.append(IndexProblem(str(path), None, f"{msg} (needed by {index}:{seq.line})"))
        if info:
            infos[path] = info
    if infos:  # a frame unlike the rest of its sequence is suspect (another camera, a stray file)
        (w, h, mode), _ = Counter(infos.values()).most_common(1)[0]
        for path, (fw, fh, fmode) in infos.items():
            if (fw, fh) != (w, h):
                problems.append(IndexProblem(str(path), None, f"unexpected size {fw}x{fh}; the sequence's frames "
                                                              f"are {w}x{h}"))
            elif fmode != mode:
                problems.append(IndexProblem(str(path), None, f"unexpected mode {fmode}; the sequence's frames "
                                                              f"are {mode}"))
    return problems


def check_dataset(root: str | Path, index: str | Path, label_regex: str = DEFAULT_LABEL_REGEX,
                  sequences: list[Sequence] | None = None) -> list[IndexProblem]:
    """Every problem of the index and of the frames it lists (or of `sequences` only, when given)."""
    root = Path(root)
    problems: list[IndexProblem] = []
    if not root.is_dir():
        return [IndexProblem(str(root), None, "data root does not exist")]
    if sequences is None:
        sequences, problems = read_index(index, label_regex)
    for seq in sequences:
        problems.extend(check_sequence_frames(root, seq, str(index)))
    return problems
