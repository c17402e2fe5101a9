"""The one way physiotouch writes a Markdown table (reports, release block, search report)."""

from __future__ import annotations


def cell(value) -> str:
    return str(value).replace("|", "/").replace("\n", " ")


def table(header: list, rows: list[list]) -> list[str]:
    """-> the table's lines: header, separator, one line per row (a `|` inside a cell becomes `/`)."""
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
