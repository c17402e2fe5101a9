"""The test-set ledger: every evaluation of a test split, kept in the data directory, keyed by data version and split.

The plan's rule is to look at the test set once, just before the release. The ledger makes a second look visible:
finalize refuses it unless forced, and a forced one is recorded here, in the release and in the README block.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

from physiotouch.cli import UserError
from physiotouch.utils.files import atomic_write_text

LEDGER = "test_ledger.json"


def split_key(splits: dict) -> str:
    """data version + a hash of the split's settings and groups (the same test set <=> the same key)."""
    blob = json.dumps({"split": splits.get("split"), "groups": splits.get("groups")}, sort_keys=True)
    return f"{splits['data_version']}:{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def read(data_dir: Path) -> dict:
    path = data_dir / LEDGER
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"the test ledger '{path}' is corrupt ({err}); restore it from a backup — it is the record "
                           f"of which checkpoints have seen the test set") from None


def entries(data_dir: Path, key: str) -> list[dict]:
    return read(data_dir).get(key, [])


def record(data_dir: Path, key: str, entry: dict) -> dict:
    ledger = read(data_dir)
    entry = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **entry}
    ledger.setdefault(key, []).append(entry)
    atomic_write_text(data_dir / LEDGER, json.dumps(ledger, indent=2))
    return entry
