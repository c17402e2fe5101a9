"""A progress bar with counts and rate for long work: cache building, `data check`, feature encoding, synthetic
generation. Shown on a terminal (stderr); silent in logs and CI unless PHYSIOTOUCH_PROGRESS=1 forces it.
rich draws it; this only decides when to draw, where, and which columns (count done/total and items per second)."""

from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    forced = os.environ.get("PHYSIOTOUCH_PROGRESS") == "1"
    if not (forced or sys.stderr.isatty()) or not total:
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.1f} it/s" if task.speed else "- it/s")

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True, force_terminal=forced or None), transient=not forced) as bar:
        yield from bar.track(items, total=total, description=description)
