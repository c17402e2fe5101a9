"""Work run in a second thread beside the caller's, the CPU cores shared between them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")


@contextmanager
def beside(work: Callable[[], T]) -> Iterator[Callable[[], T]]:
    """Runs `work` in a second thread while the caller's block runs -> its result() (which re-raises its error).
    `work` computes with one torch thread and the caller with the others (torch's thread count is per calling
    thread): `work` should be made of small operations that one core runs as fast as two (the evaluation's probe
    fits and pictures), the caller's of large ones. Three threads on two cores would make both slower than one
    after the other (measured: 31.4 s against 26.8 s for the evaluation). With one thread to share (a search's runs
    at OMP_NUM_THREADS=1), `work` runs first, then the block: the same results, one after the other."""
    threads = torch.get_num_threads()
    if threads < 2:
        value = work()
        yield lambda: value
        return
    with ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        future = pool.submit(work)
        torch.set_num_threads(threads - 1)
        try:
            yield future.result
        finally:
            torch.set_num_threads(threads)


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread in the calling thread for the block (then as before)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
