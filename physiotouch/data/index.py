"""The TacQuad index: one CSV row per recorded sequence, `folder,start_frame,end_frame`, no header.

Frames are `ROOT/folder/<t>.png`. A sample is a window of 4 consecutive frames t-3..t for every t in
[start+3, end] (the reference's rule), so a sequence gives end - start - 2 windows.
Folder names carry labels: `data_<granularity>_<object>_<sensor>` by default, or any regex with the named
groups `object` and `sensor` (and optionally `granularity`).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from physiotouch.cli import UserError

WINDOW = 4
DEFAULT_LABEL_REGEX = r"^data_(?P<granularity>[^_]+)_(?P<object>.+)_(?P<sensor>[^_]+)$"


class DataError(UserError):
    """Data a user supplied cannot be used as it is; the message names the file and what to do."""


@dataclass(frozen=True)
class Sequence:
    folder: str
    start: int
    end: int
    line: int  # 1-based line in the index file
    object: str
    sensor: str
    granularity: str

    @property
    def num_windows(self) -> int:
        return max(0, self.end - self.start - (WINDOW - 2))

    @property
    def frames(self) -> range:
        return range(self.start, self.end + 1)

    def frame_path(self, root: Path, t: int) -> Path:
        return root / self.folder / f"{t}.png"


@dataclass(frozen=True)
class IndexProblem:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


def parse_labels(folder: str, label_regex: str = DEFAULT_LABEL_REGEX) -> dict[str, str] | None:
    match = re.match(label_regex, folder)
    if not match:
        return None
    groups = match.groupdict()
    return {"object": groups.get("object") or "", "sensor": groups.get("sensor") or "",
            "granularity": groups.get("granularity") or ""}


MAX_INDEX_BYTES = 64 * 2**20  # one row per sequence of ~60 bytes: a million sequences fit in 64 MiB


def _index_text(path: Path) -> str:
    """The index as text: UTF-8 (with or without BOM) or UTF-16 with a BOM; anything else is refused by name."""
    try:
        size = path.stat().st_size
        if size > MAX_INDEX_BYTES:  # checked before reading: a huge (or sparse) file would fill the memory
            raise DataError(f"index file '{path}' is {size / 2**20:.0f} MiB, above the limit of "
                            f"{MAX_INDEX_BYTES // 2**20} MiB (about a million rows): is it the right file?")
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"index file '{path}' cannot be read ({err.strerror})") from None
    encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        name = encoding.upper().removesuffix("-SIG")
        raise DataError(f"index file '{path}' is not {name} text (byte {raw[err.start:err.start + 1]!r} at offset "
                        f"{err.start}); save it as UTF-8 CSV") from None


def read_index(index: str | Path, label_regex: str = DEFAULT_LABEL_REGEX) -> tuple[list[Sequence], list[IndexProblem]]:
    """Parse the index. Returns the good sequences and one problem per bad row (never raises for bad rows)."""
    path = Path(index)
    if not path.is_file():
        raise DataError(f"index file '{path}' does not exist; set data.index=PATH (a CSV of folder,start,end rows)")
    try:
        re.compile(label_regex)
    except re.error as err:
        raise DataError(f"data.label_regex is not a valid regular expression: {err}") from None
    sequences, problems, seen = [], [], {}
    try:
        rows = list(csv.reader(io.StringIO(_index_text(path), newline="")))
    except csv.Error as err:
        raise DataError(f"index file '{path}' is not a readable CSV ({err}); save it as plain UTF-8 CSV") from None
    for lineno, row in enumerate(rows, start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        def bad(msg: str, line: int = lineno) -> None:
            problems.append(IndexProblem(str(path), line, msg))

        if len(row) != 3:
            bad(f"expected 3 fields folder,start,end; got {len(row)}: {','.join(row)[:80]!r}")
            continue
        folder, start, end = (cell.strip() for cell in row)
        try:
            start_i, end_i = int(start), int(end)
        except ValueError:
            bad(f"start and end must be integers; got {start!r}, {end!r}")
            continue
        if start_i < 0 or end_i < start_i + WINDOW - 1:
            bad(f"{folder}: end ({end_i}) must be >= start ({start_i}) + {WINDOW - 1} to make one {WINDOW}-frame "
                f"window")
            continue
        if any(ord(c) < 32 for c in folder):
            bad(f"folder name {folder!r} contains control characters")
            continue
        labels = parse_labels(folder, label_regex)
        if labels is None:
            bad(f"folder name {folder!r} does not match data.label_regex {label_regex!r}")
            continue
        if folder in seen:
            bad(f"folder {folder!r} is listed twice (first on line {seen[folder]})")
            continue
        seen[folder] = lineno
        sequences.append(Sequence(folder, start_i, end_i, lineno, **labels))
    if not sequences and not problems:
        problems.append(IndexProblem(str(path), None, "the index lists no sequences"))
    return sequences, problems


def read_beside_index(path: Path, max_bytes: int) -> list[list[str]]:
    """The rows of a CSV file that sits beside the index (labels.csv, trajectory.csv): it must be a regular file
    under `max_bytes`, UTF-8 text and a readable CSV, else one DataError naming the file and what to do."""
    if not path.is_file() or path.stat().st_size > max_bytes:
        raise DataError(f"'{path}' is not a regular file under {max_bytes // 2**20} MiB; remove it or fix it")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"'{path}' cannot be read as UTF-8 CSV ({err}); save it as UTF-8") from None
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:  # e.g. a field over csv's limit (128 KiB): no value here is that long
        raise DataError(f"'{path}' is not a readable CSV ({err}); save it as plain UTF-8 CSV") from None


def body_rows(rows: list[list[str]], width: int, path: Path, problems: list[IndexProblem]):
    """Yields (line number, stripped cells) of each row after the header that holds `width` fields; blank rows are
    skipped, a row of another width is one problem."""
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != width:
            problems.append(IndexProblem(str(path), line, f"expected {width} fields, got {len(row)}"))
            continue
        yield line, [c.strip() for c in row]
