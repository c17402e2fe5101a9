"""The evaluation's second thread (utils/threads.py) and the progress display its rows share (utils/progress.py)."""

from __future__ import annotations

import threading

import pytest
import torch

from physiotouch.utils import progress as progress_module
from physiotouch.utils.progress import progress
from physiotouch.utils.threads import beside


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_work_beside_runs_in_a_second_thread_on_one_core_and_the_caller_keeps_the_rest(two_threads):
    seen = {}

    def work():
        seen["thread"], seen["threads"] = threading.current_thread(), torch.get_num_threads()
        return 42

    with beside(work) as result:
        caller_threads = torch.get_num_threads()
    assert result() == 42
    assert seen["thread"] is not threading.current_thread() and seen["threads"] == 1
    assert caller_threads == 1  # two cores: one each
    assert torch.get_num_threads() == 2  # given back after the block


def test_an_error_beside_reaches_the_caller_and_the_threads_are_given_back(two_threads):
    def work():
        raise ValueError("bad probe")

    with beside(work) as result:
        pass
    with pytest.raises(ValueError, match="bad probe"):
        result()
    assert torch.get_num_threads() == 2


def test_with_one_thread_the_work_runs_first_in_the_callers_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        order = []
        with beside(lambda: order.append(("work", threading.current_thread()))) as result:
            order.append(("block", threading.current_thread()))
        result()
        assert [name for name, _ in order] == ["work", "block"]
        assert all(thread is threading.current_thread() for _, thread in order)
    finally:
        torch.set_num_threads(before)


def test_bars_of_two_threads_are_rows_of_one_display(monkeypatch, capsys):
    monkeypatch.setenv("PHYSIOTOUCH_PROGRESS", "1")
    inside = threading.Barrier(2)
    rows = []

    def count(name):
        for i in progress(range(3), 3, name):
            if i == 0:
                inside.wait(timeout=10)  # both bars open at once
                rows.append(progress_module._display["rows"])
                inside.wait(timeout=10)  # ... until both have looked

    threads = [threading.Thread(target=count, args=(name,)) for name in ("probes (model)", "encoding train")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rows == [2, 2]  # one display, two rows
    assert progress_module._display == {"bar": None, "rows": 0}  # closed once both ended
    err = capsys.readouterr().err
    assert "probes (model)" in err and "encoding train" in err


def test_one_thread_for_the_block_then_as_before(two_threads):
    from physiotouch.utils.threads import one_thread

    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_an_error_in_the_block_is_raised_without_waiting_for_the_work(two_threads):
    release, finished = threading.Event(), threading.Event()

    def work():
        release.wait(timeout=30)
        finished.set()

    with pytest.raises(RuntimeError, match="encoding failed"):
        with beside(work):
            raise RuntimeError("encoding failed")
    assert not finished.is_set()  # raised while the second thread still worked
    assert torch.get_num_threads() == 2
    release.set()
    assert finished.wait(timeout=10)
