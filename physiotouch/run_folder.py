"""Reading files of a run folder that may come from someone else ("evaluate my run"): bounded, plain data only.

A run folder is input like any other file a user hands over. Its YAML is read with a safe loader that also
refuses aliases (a few lines of nested aliases expand to gigabytes when traversed), its files are size-capped,
and what is read is data: nothing in it is instantiated (see `physiotouch.data.build_datamodule`).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import yaml

from physiotouch.cli import UserError

CONFIG = "config_resolved.yaml"
SPLITS = "splits.json"
SUMMARY = "summary.json"
RUN_INFO = "run_info.json"
HISTORY = "history.json"
HEALTH = "health.json"
LOCK = ".run.lock"
CHECKPOINTS = "checkpoints"
MAX_BYTES = 16 * 2**20  # far above any file a run writes (history of 1,000 epochs: ~1 MiB)


class RunFolderError(UserError):
    """A run folder's file is missing, too large, malformed or of the wrong kind."""


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            raise yaml.YAMLError("aliases (*name) are not allowed in a run's files")
        return super().compose_node(parent, index)


def read_text(path: Path) -> str:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise RunFolderError(f"'{path}' is not a regular file; a run folder holds plain files")
        size = st.st_size
        if size > MAX_BYTES:
            raise RunFolderError(f"'{path}' is {size / 2**20:.0f} MiB, more than any run file should be "
                                 f"({MAX_BYTES // 2**20} MiB); it is not a physiotouch run file")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFolderError(f"'{path}' is missing: the run did not finish (or is not a physiotouch run)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RunFolderError(f"'{path}' cannot be read ({err})") from None


def read_yaml(path: Path, expect: type = dict):
    """A YAML file holding an `expect` (a config mapping, or the list of overrides)."""
    try:
        data = yaml.load(read_text(path), Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise RunFolderError(f"'{path}' is not valid YAML for a run file ({str(err).splitlines()[0]})") from None
    if not isinstance(data, expect):
        raise RunFolderError(f"'{path}' does not hold a {expect.__name__}")
    return data


def read_json(path: Path, default: Any = None) -> Any:
    if default is not None and not path.is_file():
        return default
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise RunFolderError(f"'{path}' is not valid JSON ({err}); the run was cut off while writing it") from None
