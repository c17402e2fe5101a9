"""How every command turns an error a user can cause into one line and an exit code.

Exit codes (the same for every `python -m physiotouch.*` command; README "Exit codes"):

| code | meaning |
|---|---|
| 0 | done |
| 1 | `data check` found problems (it lists them) |
| 2 | bad input: a config value or key, data, index, checkpoint, run folder or release request (the line names it) |
| 3 | the machine: output not writable, disk full, a run folder held by another live process |
| 4 | training stopped on a non-finite loss (the line names the last good checkpoint) |
| 70 | a bug in physiotouch: its traceback is shown (never 1, which `data check` keeps for "problems found") |
"""

from __future__ import annotations

import difflib
import errno
import logging
import os
import sys
import traceback
import typing
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from typing import Any, Callable

OK, FOUND_PROBLEMS, BAD_INPUT, ENVIRONMENT, DIVERGED, BUG = 0, 1, 2, 3, 4, 70


class UserError(RuntimeError):
    """Base of the errors a user can cause and fix; the message names the file or key and what to do."""

    exit_code = BAD_INPUT


class ConfigError(UserError, ValueError):
    """A config value that cannot be used (wrong type or out of range); the message names the key."""


class EnvironmentProblem(UserError):
    """The output folder is not writable, the disk is full, or another process holds the run folder."""

    exit_code = ENVIRONMENT


# OS errors that mean "this machine cannot do it here", not a bug: said in one line with the file involved.
_ENV_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted", errno.EIO: "input/output error (a failing or full disk)"}


def environment_problem(err: OSError) -> EnvironmentProblem | None:
    """An OSError a user can fix (full disk, read-only folder) -> one clear error; None for anything else."""
    if err.errno not in _ENV_ERRNOS:
        return None
    where = f" writing '{err.filename}'" if err.filename else ""
    return EnvironmentProblem(f"{_ENV_ERRNOS[err.errno]}{where}: free some space or fix the permissions (or write "
                              f"elsewhere with hydra.run.dir=DIR), then restart; a training run resumes with "
                              f"ckpt_path=last")


def composition_error(err: BaseException) -> ConfigError | None:
    """Hydra's refusal to compose (a key its typed node lacks, a value of the wrong type, an option or override that
    does not exist or parse) as one line naming the key; None for any other error."""
    from hydra.errors import ConfigCompositionException, OverrideParseException

    if not isinstance(err, (ConfigCompositionException, OverrideParseException)):
        return None
    cause = err.__cause__
    key, owner = getattr(cause, "full_key", None), getattr(cause, "object_type", None)
    if key and is_dataclass(owner) and "not in" in str(cause):  # a key its typed settings node lacks
        return ConfigError(unknown_key(key, [f.name for f in fields(owner)]))
    leaf = key.rpartition(".")[2] if key else None
    if is_dataclass(owner) and leaf in {f.name for f in fields(owner)} and hasattr(cause, "value"):
        return ConfigError(wrong_type(key, cause.value, typing.get_type_hints(owner)[leaf]))
    parsing = isinstance(err, OverrideParseException)
    lines: list[str] = [f"cannot parse the override '{err.override}'"] if parsing else []
    for part in (err, cause):
        for line in str(part or "").split("Config search path")[0].splitlines():
            line = line.strip().rstrip(".")
            if line and not line.startswith(_HYDRA_NOISE) and line not in lines:
                lines.append(line)
    return ConfigError("; ".join(lines).replace(":;", ":"))


def unknown_key(key: str, names: list[str]) -> str:
    """The one phrasing of a key that its settings lack: the nearest known name, then all of them."""
    where, _, leaf = key.rpartition(".")
    near = difflib.get_close_matches(leaf, names, n=1)
    return (f"unknown key {key}" + (f" (did you mean {where + '.' if where else ''}{near[0]}?)" if near else "") +
            f"; {where or 'the config'} has: {', '.join(sorted(names))}")


def wrong_type(key: str, value: Any, hint: Any) -> str:
    """The one phrasing of a value of the wrong type for its settings field."""
    name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    return f"{key}={value!r} is not valid: it must be of type {name}"


# Lines of Hydra's and OmegaConf's messages that say nothing the key and the reason have not said.
_HYDRA_NOISE = ("full_key:", "object_type=", "reference_type=", "To append to your config", "Set the environment")


def as_user_error(err: BaseException) -> UserError | None:
    """The user-facing form of an error, or None when it is a bug (keep its traceback)."""
    if isinstance(err, UserError):
        return err
    composing = composition_error(err)  # before OSError: Hydra's MissingConfigException is an IOError
    if composing is not None:
        return composing
    if isinstance(err, OSError):
        return environment_problem(err)
    return None


def run_hydra_app(app: Callable[[], Any]) -> None:
    """Run a `@hydra.main` command so that a config Hydra cannot compose says one line and exits 2, like every
    other user error (Hydra itself prints several lines and exits 1). Hydra hands the error on only under
    HYDRA_FULL_ERROR, set here for this process and its jobs; a user who set it gets Hydra's full traceback."""
    if os.environ.get("HYDRA_FULL_ERROR") and not os.environ.get(_FULL_ERROR_IS_OURS):
        app()
        return
    os.environ.update({"HYDRA_FULL_ERROR": "1", _FULL_ERROR_IS_OURS: "1"})
    try:
        app()
    except Exception as err:  # noqa: BLE001 - a composition error is the user's; anything else is a bug
        known = composition_error(err)
        if known is None:
            traceback.print_exc()
            sys.exit(BUG)
        sys.exit(report(known))


_FULL_ERROR_IS_OURS = "PHYSIOTOUCH_SET_HYDRA_FULL_ERROR"


def report(err: UserError) -> int:
    """Print the one line (the message may hold a short list after it) and return the exit code."""
    print(f"error: {err}", file=sys.stderr, flush=True)
    return err.exit_code


@contextmanager
def user_errors(log: logging.Logger | None = None, sweep_failure: Callable[[str], None] | None = None):
    """`with user_errors():` around a command's work: a user error prints one line and exits with its code; a bug
    keeps its traceback. `log`: also into this logger (a Hydra command's log file). `sweep_failure`: this is one job
    of a sweep, which must go on: any error, a user's or a bug (its traceback into `log`), is handed to it as one
    line, printed, and the block ends without raising."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - sorted by as_user_error; bugs are re-raised untouched
        known = as_user_error(err)
        if known is None and sweep_failure is None:
            traceback.print_exc()  # a bug: its traceback, and an exit code no user error has
            sys.exit(BUG)
        if log is not None:
            if known is not None:
                log.error("%s: %s", type(known).__name__, known)
            else:
                log.exception("job failed")
        if sweep_failure is None:
            sys.exit(report(known))
        print(f"job failed: {known or err}", file=sys.stderr, flush=True)  # the sweep goes on; its end says "error:"
        sweep_failure(f"{type(err).__name__}: {known or err}")
