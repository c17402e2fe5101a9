"""A second process that fits probes for the evaluation (`probes.run_probes`, one request at a time): the controls'
tuned probes are fit by it and by the evaluation's own second thread, each taking the next unit of work when free.

Why a process and not a third thread: the fits are thousands of small torch operations, and every one takes Python's
global lock to start. Two threads fitting at once in one process each spent 13-50% more CPU per fit than alone (the
smaller the features, the more: measured on the default run's controls), two processes 5%. Why our own and not
concurrent.futures or multiprocessing.Pool: the evaluation's threads pull units from one queue as each is free, and a
pool's worker that dies takes its task with it (Pool waits forever); here the unit is fitted in this process instead.
The process is spawned (a fresh interpreter: forking a process that runs torch threads is unsafe) as early as
possible, so that its imports (seconds) use a core the evaluation's start leaves idle.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import types
from contextlib import contextmanager
from typing import Iterator

import numpy as np

log = logging.getLogger(__name__)


@contextmanager
def started(setting: str) -> Iterator[FitWorker | None]:
    """The process for an evaluation whose `fit_process` setting is `setting` ("auto", "on", "off"), ended after
    the block; "auto": where torch has two or more threads here (a search's runs at one thread each share the machine
    already). None where not wanted."""
    import torch

    if not (setting == "on" or (setting == "auto" and torch.get_num_threads() >= 2)):
        yield None
        return
    worker = FitWorker()
    try:
        yield worker
    finally:
        worker.close()


class FitWorker:
    """The second process: `run_probes` as `probes.run_probes` (the same arguments, the same results), fitted there.
    If the process has ended (killed, out of memory), the fits are made in this process instead, with a warning."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), name="physiotouch-probe-fits", daemon=True)
        with _no_main_script():
            self._process.start()
        child.close()
        self.alive, self.closed = True, False

    def run_probes(self, tasks: list, x: np.ndarray, cfg, label: str = "model", predictions: dict | None = None
                   ) -> tuple[dict, dict, dict]:
        from .probes import run_probes

        if self.alive:
            try:
                self._conn.send((tasks, x, cfg, label))
                ok, value = self._conn.recv()
            except (EOFError, OSError):
                if self.closed:  # the evaluation ended it (an error, an interrupt): nothing more to fit
                    raise RuntimeError("the probe-fitting process was ended") from None
                self.alive = False
                log.warning("the probe-fitting process ended (exit code %s); fitting the rest in this one",
                            self._process.exitcode)
            else:
                if not ok:
                    raise value
                metrics, curves, choices, preds = value
                if predictions is not None:
                    predictions.update(preds)
                return metrics, curves, choices
        return run_probes(tasks, x, cfg, label, predictions=predictions)

    def close(self) -> None:
        """Ends the process (at once: a fit in progress is abandoned)."""
        self.closed = True
        self._conn.close()
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(5)


@contextmanager
def _no_main_script() -> Iterator[None]:
    """While a process is spawned: an empty __main__, so that the process imports this package alone. Spawn otherwise
    imports the caller's script in it, and a script without an `if __name__ == "__main__":` guard (a training with
    `evaluate_after_training=true`, say) would run again there. Spawn reads __main__ once, in `start()`."""
    script = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = script


def _serve(conn) -> None:
    """The process: fits each request (tasks, features, settings, label) on one torch thread and answers
    (True, (metrics, curves, choices, predictions)) or (False, the error), until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the evaluation's to handle: it ends this process
    os.environ["PHYSIOTOUCH_PROGRESS"] = "0"  # no bars of its own on the evaluation's terminal (it shows a row)
    from .probes import run_probes  # the imports first, while the evaluation loads its model and data

    while True:
        try:
            tasks, x, cfg, label = conn.recv()
        except (EOFError, OSError):
            return
        try:
            preds: dict = {}
            answer = (True, (*run_probes(tasks, x, cfg, label, predictions=preds), preds))
        except Exception as err:  # noqa: BLE001 - handed to the evaluation, which raises it
            answer = (False, err)
        conn.send(answer)
