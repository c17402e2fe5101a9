"""Work run in a second thread beside the caller's, the CPU cores shared between them."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")


@contextmanager
def beside(work: Callable[[], T]) -> Iterator[Callable[[], T]]:
    """Runs `work` in a second thread while the caller's block runs -> its result() (which waits for it and re-raises
    its error). `work` computes with one torch thread and the caller with the others (torch's thread count is per
    calling thread): `work` should be made of small operations that one core runs as fast as two (the evaluation's
    probe fits and pictures), the caller's of large ones. Three threads on two cores would make both slower than one
    after the other (measured: 31.4 s against 26.8 s for the evaluation). With one thread to share (a search's runs
    at OMP_NUM_THREADS=1), `work` runs first, then the block: the same results, one after the other.
    An error in the block is raised at once, without waiting for `work` (a daemon thread: it ends with the process).
    Why not concurrent.futures: its threads are joined when the interpreter exits, so an interrupted evaluation
    would wait for the second thread's fits before exiting."""
    threads = torch.get_num_threads()
    if threads < 2:
        value = work()
        yield lambda: value
        return

    def on_one_core() -> T:
        torch.set_num_threads(1)
        return work()

    with in_thread(on_one_core, "physiotouch-beside") as result:
        torch.set_num_threads(threads - 1)
        try:
            yield result
        finally:
            torch.set_num_threads(threads)


@contextmanager
def in_thread(work: Callable[[], T], name: str) -> Iterator[Callable[[], T]]:
    """Runs `work` in a daemon thread while the caller's block runs -> its result() (which waits for it and re-raises
    its error). For work that waits more than it computes (`beside` gives one that computes a core of its own)."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as err:  # handed to the caller by result()
            outcome["error"] = err

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()

    def result() -> T:
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    yield result


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread in the calling thread for the block (then as before)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
