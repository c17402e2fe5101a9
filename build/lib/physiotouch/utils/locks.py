"""One writer per folder: an advisory file lock that names its holder.

The kernel releases a `flock` when its process dies, however it dies, so a lock left by a killed run is free and
is taken over (and said); a live holder is named in the refusal. The lock file holds the holder's pid, host,
start time and command line as JSON for that message. Works on local disks; on a network file system that does
not honour flock the lock still names the last holder but cannot exclude (documented in the README).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from physiotouch.cli import EnvironmentProblem

log = logging.getLogger(__name__)


class LockHeld(EnvironmentProblem):
    """Another live process holds the lock."""


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)[:300]}


def _describe(info: dict) -> str:
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')} "
            f"({info.get('command', '?')})")


class FolderLock:
    """`with FolderLock(path, what)`: exclusive, non-blocking by default (`wait=True` blocks until free)."""

    def __init__(self, path: str | Path, what: str, wait: bool = False, timeout: float | None = None):
        self.path, self.what, self.wait, self.timeout = Path(path), what, wait, timeout
        self._fd: int | None = None
        self.took_over: dict | None = None  # the previous holder, when its process had died

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not self.wait or (self.timeout is not None and time.monotonic() - start > self.timeout):
                    info = _read(fd)
                    os.close(fd)
                    raise LockHeld(f"{self.what} '{self.path.parent}' is in use by {_describe(info)}; wait for it "
                                   f"to finish or use another folder (lock file {self.path})") from None
                time.sleep(0.2)
        previous = _read(fd)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            self.took_over = previous  # flock was free, so that holder is gone (killed, or crashed)
            log.warning("took over the lock of %s: %s is no longer running", self.path, _describe(previous))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty lock file = released cleanly
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    """The holder the lock file names; {} for an empty, garbled or foreign file (a list, a number, deep nesting)."""
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError, RecursionError):
        return {}
    return info if isinstance(info, dict) else {}
