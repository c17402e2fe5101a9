"""The one way physiotouch writes text from files into Markdown: tables (reports, release block, search report) and
values read from a run folder or a release (`inert`), which must never add a line, a heading, HTML or a marker."""

from __future__ import annotations

import html
import re

HEX_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")


def _one_escaped_line(value) -> str:
    """Whitespace runs (newlines included) as one space; `<`, `>` and `&` HTML-escaped, so that no tag, comment or
    generated-block marker can form."""
    return html.escape(" ".join(str(value).split()), quote=False)


def inert(value) -> str:
    """A value from a file as plain text on one line, HTML-escaped, backticks as quotes (it cannot end a code span)."""
    return _one_escaped_line(value).replace("`", "'")


def commit(value) -> str:
    """A git commit from a file: shown only if it is a hex commit id, else 'unknown'."""
    return value if isinstance(value, str) and HEX_COMMIT.match(value) else "unknown"


def cell(value) -> str:
    """A table cell: one line, HTML-escaped, `|` as `/` (backticks kept: cells may show `code`)."""
    return _one_escaped_line(value).replace("|", "/")


def table(header: list, rows: list[list]) -> list[str]:
    """-> the table's lines: header, separator, one line per row (a `|` inside a cell becomes `/`)."""
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
