"""Per-sequence attributes beside the index: `labels.csv` (optional; real TacQuad has none).

A header row naming the columns, then one row per sequence folder of the index:
    folder,motion,peak_depth,shape,surface
    data_fine-s0_sphere_gelsight,press,0.8384,sphere,smooth
`folder` is required; every other column is an attribute. Columns named in `NUMERIC` must hold finite numbers
(regression targets); the rest are class labels. The evaluation probes these attributes on sequences and objects
their probes were not fit on (`physiotouch.evaluation.probes`); `python -m physiotouch.data check` validates the file.
"""

from __future__ import annotations

import math
from pathlib import Path

from .index import DataError, IndexProblem, body_rows, read_beside_index

LABELS_FILE = "labels.csv"
NUMERIC = ("peak_depth", "peak_force")
MAX_BYTES = 64 * 2**20


def labels_path(index: str | Path) -> Path:
    return Path(index).with_name(LABELS_FILE)


def read_labels(index: str | Path, folders: list[str]) -> tuple[dict[str, dict], list[IndexProblem]]:
    """-> ({folder: {attribute: value}} for the index's folders, one problem per bad row or missing folder).
    No file: ({}, [])."""
    path = labels_path(index)
    if not path.exists():
        return {}, []
    rows = read_beside_index(path, MAX_BYTES)
    if not rows or not rows[0] or rows[0][0].strip() != "folder":
        raise DataError(f"'{path}': the first row must be a header starting with 'folder' (e.g. "
                        f"folder,motion,peak_depth)")
    header = [c.strip() for c in rows[0]]
    known, labels, problems = set(folders), {}, []
    for line, row in body_rows(rows, len(header), path, problems):
        values = dict(zip(header, row))
        folder = values.pop("folder")
        if folder in labels:
            problems.append(IndexProblem(str(path), line, f"folder {folder!r} is labelled twice"))
        elif folder not in known:
            problems.append(IndexProblem(str(path), line, f"folder {folder!r} is not in the index"))
        else:
            bad = [k for k in NUMERIC if k in values and not _finite(values[k])]
            if bad:
                problems.append(IndexProblem(str(path), line, f"{', '.join(bad)} must be a finite number"))
                continue
            labels[folder] = {k: float(v) if k in NUMERIC else v for k, v in values.items()}
    missing = [f for f in folders if f not in labels]
    if labels and missing:
        problems.append(IndexProblem(str(path), None, f"{len(missing)} sequence folder(s) of the index have no row, "
                                                      f"e.g. {missing[0]!r}"))
    return labels, problems


def _finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
