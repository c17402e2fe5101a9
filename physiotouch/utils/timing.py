"""Seconds per phase of a long command (the evaluation: encode, probes, each control, robustness, plots), kept in
the order the phases ran, for `timings.json` and the one line a report ends with. Phases may run side by side (the
evaluation's second thread, utils/threads.py): the total is the wall clock since the timer started, not their sum."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


class PhaseTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def line(self, total: float) -> str:
        """'encode 1.9 s · probes 2.7 s · ... · total 24.1 s' (`total`: the wall clock, `elapsed()` taken once for
        this line and timings.json alike)."""
        parts = [f"{name} {sec:.1f} s" for name, sec in self.seconds.items()]
        overlap = " (wall clock; phases ran side by side)" if sum(self.seconds.values()) > total else ""
        return " · ".join([*parts, f"total {total:.1f} s{overlap}"])
