"""A progress bar with counts and rate for long work: cache building, `data check`, feature encoding, synthetic
generation. Shown on a terminal (stderr); silent in logs and CI unless PHYSIOTOUCH_PROGRESS=1 forces it (0: never, as
in the evaluation's probe-fitting process, evaluation/fit_worker.py, which shares the evaluation's terminal).
rich draws it; this only decides when to draw, where, and which columns (count done/total and items per second).

Bars opened while another is open (the evaluation fits the model's probes in a second thread beside the encodings,
evaluation/run.py) are rows of one display: two live displays would overwrite each other's lines."""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_display: dict = {"bar": None, "rows": 0}  # the one open display and how many rows use it


def _forced() -> bool:
    return os.environ.get("PHYSIOTOUCH_PROGRESS") == "1"


def shown() -> bool:
    return _forced() or (os.environ.get("PHYSIOTOUCH_PROGRESS") != "0" and sys.stderr.isatty())


def _new_display():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.1f} it/s" if task.speed else "- it/s")

    forced = _forced()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True, force_terminal=forced or None), transient=not forced)


@contextmanager
def progress_row(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """-> advance(n=1) for one row of the shared display (a no-op where nothing is shown)."""
    if not shown() or not total:
        yield lambda n=1: None
        return
    with _lock:
        if _display["bar"] is None:
            _display["bar"] = _new_display()
            _display["bar"].start()
        _display["rows"] += 1
        bar = _display["bar"]
        row = bar.add_task(description, total=total)
    try:
        yield lambda n=1: bar.advance(row, n)
    finally:
        with _lock:
            _display["rows"] -= 1
            if _display["rows"] == 0:
                bar.stop()
                _display["bar"] = None
            elif bar.live.transient:  # the others go on: a finished row leaves (it would stay at 100% until they end)
                bar.remove_task(row)


def progress(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    with progress_row(description, total) as advance:
        for item in items:
            yield item
            advance()
