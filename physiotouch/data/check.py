"""Find everything wrong with a TacQuad-format data set, each problem with its file (and index line).

`check_dataset` decodes every frame (the `python -m physiotouch.data check` command). Training calls
`quick_check` on the train and validation sequences only (stat, no decoding; decoding errors surface while the
cache is built), so it never touches a test frame.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from physiotouch.utils.progress import progress

from .frames import FrameError, check_regular_file, decode_frame, open_frame
from .index import DEFAULT_LABEL_REGEX, IndexProblem, Sequence, read_index
from .labels import read_labels
from .trajectory import read_trajectory

__all__ = ["decode_frame", "check_dataset", "quick_check", "missing_frames", "outside_root"]
LIST_MISSING = 20  # more missing frames than this in one sequence are summarised in one line


def frame_problem(path: Path) -> tuple[str | None, tuple | None]:
    """-> (problem message or None, (width, height, mode) when readable). The same rule as training's decoding."""
    try:
        _, (fmt, width, height, mode) = open_frame(path)
    except FrameError as err:
        return str(err), None
    if fmt != "PNG":
        return f"not a PNG (format {fmt})", (width, height, mode)
    return None, (width, height, mode)


def _frame_numbers(folder: Path) -> set[int]:
    """Frame numbers present in a folder (`<t>.png`), from one directory listing."""
    numbers = set()
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, dot, ext = entry.name.rpartition(".")
            if dot and ext == "png" and stem.isdigit():
                numbers.add(int(stem))
    return numbers


def missing_frames(root: Path, seq: Sequence, index: str) -> tuple[list[IndexProblem], list[int], set[int]]:
    """Frames the index lists that the folder lacks, found from one listing (bounded however absurd the range).
    -> (problems, the first missing frame numbers (at most LIST_MISSING + 1), present frame numbers in range)."""
    folder = root / seq.folder
    if not folder.is_dir():
        return [IndexProblem(index, seq.line, f"folder '{folder}' does not exist")], [], set()
    try:
        present = {t for t in _frame_numbers(folder) if seq.start <= t <= seq.end}
    except OSError as err:
        return [IndexProblem(index, seq.line, f"folder '{folder}' cannot be listed ({err.strerror})")], [], set()
    n_missing = (seq.end - seq.start + 1) - len(present)
    first = []
    for t in seq.frames:
        if len(first) > LIST_MISSING or len(first) == n_missing:
            break
        if t not in present:
            first.append(t)
    if n_missing > LIST_MISSING:
        problems = [IndexProblem(index, seq.line, f"{n_missing} of the {seq.end - seq.start + 1} frames "
                                 f"{seq.start}..{seq.end} listed for '{folder}' are missing (first: "
                                 f"{', '.join(f'{t}.png' for t in first[:5])}); check the end frame")]
    else:
        problems = [IndexProblem(str(seq.frame_path(root, t)), None, f"missing frame (needed by line {seq.line})")
                    for t in first]
    return problems, first, present


def outside_root(root: Path, sequences: list[Sequence], index: str) -> list[IndexProblem]:
    """Index rows whose folder, or a frame link inside it, resolves (symlinks followed) outside the data root.
    Reads folder listings only (never a frame's content)."""
    real_root, problems = root.resolve(), []

    def inside(target: Path) -> bool:
        return target == real_root or real_root in target.parents

    hint = "; fix the row, or set data.allow_outside_root=true if that is intended"
    for seq in sequences:
        target = _resolved(root / seq.folder)
        if target is None:
            problems.append(IndexProblem(index, seq.line, f"folder {seq.folder!r} is a symlink loop; fix the link"))
            continue
        if not inside(target):
            problems.append(IndexProblem(index, seq.line, f"folder {seq.folder!r} resolves to '{target}', outside "
                                                          f"the data root '{real_root}'{hint}"))
            continue
        try:
            with os.scandir(target) as entries:
                links = [Path(e.path) for e in entries if e.is_symlink()]
        except OSError:
            continue  # a missing or unreadable folder is reported by the frame checks
        for link in links:
            real = _resolved(link)
            if real is None:
                problems.append(IndexProblem(index, seq.line, f"frame '{link}' is a symlink loop; fix the link"))
                break
            if not inside(real):
                problems.append(IndexProblem(index, seq.line, f"frame '{link}' links to '{real}', outside "
                                                              f"the data root '{real_root}'{hint}"))
                break
    return problems


def _resolved(path: Path) -> Path | None:
    """The path with every link followed; None for a symlink loop (which Path.resolve raises as RuntimeError)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return None


def quick_check(root: Path, sequences: list[Sequence], index: str) -> list[IndexProblem]:
    """Folders exist and every frame of these sequences exists as a non-empty regular file (listing + stat)."""
    problems = []
    for seq in sequences:
        missing, _, present = missing_frames(root, seq, index)
        problems += missing
        for t in sorted(present):
            try:
                check_regular_file(seq.frame_path(root, t))
            except FrameError as err:
                problems.append(IndexProblem(str(seq.frame_path(root, t)), None, str(err)))
    return problems


def check_sequence_frames(root: Path, seq: Sequence, index: str) -> list[IndexProblem]:
    problems, _, present = missing_frames(root, seq, index)
    infos = {}
    for t in sorted(present):
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
                  sequences: list[Sequence] | None = None, allow_outside_root: bool = False,
                  progress_bar: bool = False) -> list[IndexProblem]:
    """Every problem of the index and of the frames it lists (or of `sequences` only, when given)."""
    root = Path(root)
    problems: list[IndexProblem] = []
    if not root.is_dir():
        return [IndexProblem(str(root), None, "data root does not exist")]
    if sequences is None:
        sequences, problems = read_index(index, label_regex)
        folders = [s.folder for s in sequences]
        problems.extend(read_labels(index, folders)[1])  # labels.csv, when present
        problems.extend(read_trajectory(index, folders)[1])  # trajectory.csv, when present
    if not allow_outside_root:
        outside = outside_root(root, sequences, str(index))
        problems.extend(outside)
        sequences = [s for s in sequences if not any(p.line == s.line for p in outside)]
    shown = progress(sequences, len(sequences), "checking sequences") if progress_bar else sequences
    for seq in shown:
        problems.extend(check_sequence_frames(root, seq, str(index)))
    return problems
