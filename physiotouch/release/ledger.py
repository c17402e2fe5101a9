"""The test-set ledger: every look at a test split, keyed by the set of test objects (groups) it covers.

The plan's rule is to look at each test object once, just before the release. A look is recorded (with the
checkpoint's SHA-256, the data version and the split) in three places, and all of them are read before the next look:
- the project ledger `releases/test_ledger.json` beside README.md (committed by `finalize --tag`), and this
  repository's own (`REPOSITORY_LEDGER`), whatever `--docs-root` says: another docs root cannot hide a look,
- the release folder's own `test_ledger.json` (a copy of its entry, kept with the release),
- the data directory's `test_ledger.json` (the older location; still read).
Keyed by the test objects rather than by the data folder or run, so that a copied run, another copy of the data or
another data version cannot look at the same objects unrecorded. The rule is per object: a test set that holds any
single object an earlier look tested is refused (a subset or a reshuffle of tested objects is not a first look),
and so is a split whose train or validation holds one (it would learn from, or select on, tested objects).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

from physiotouch.cli import UserError
from physiotouch.paths import REPO_DIR
from physiotouch.utils.files import atomic_write_text

LEDGER = "test_ledger.json"
REPOSITORY_LEDGER = REPO_DIR / "releases" / LEDGER


class ReleaseError(UserError):
    """The release cannot be made as asked; the message says why and what to do."""


def split_key(splits: dict) -> str:
    """The test objects (groups) a split tests: the same set <=> the same key, whatever the data folder or version."""
    groups = sorted(splits.get("groups", {}).get("test") or [])
    return "test-groups:" + hashlib.sha256(json.dumps(groups).encode()).hexdigest()[:16]


def read(path: Path) -> dict:
    """One ledger file ({key: [entries]}); a missing file is an empty ledger."""
    if path.is_dir():
        path = path / LEDGER
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"the test ledger '{path}' is corrupt ({err}); restore it from git or a backup — it is the "
                        f"record of which checkpoints have seen the test set") from None
    if not isinstance(data, dict):
        raise UserError(f"the test ledger '{path}' does not hold a mapping; restore it from git or a backup")
    return data


def known_ledgers(docs_root: Path, data_dir: Path, extra: list[Path] = ()) -> list[Path]:
    """Every ledger this project knows: its own, this repository's, each release folder's, the data directory's,
    and `extra`."""
    releases = docs_root / "releases"
    found = [releases / LEDGER, REPOSITORY_LEDGER, *sorted(releases.glob(f"*/{LEDGER}")), data_dir / LEDGER, *extra]
    return list(dict.fromkeys(p for p in found if p.is_file()))


def entries(ledgers: list[Path], key: str) -> list[dict]:
    """Every recorded look at the test objects of `key`, oldest first."""
    seen = {}
    for path in ledgers:
        for entry in read(path).get(key, []):
            seen.setdefault((entry.get("when"), entry.get("sha256")), entry)
    return sorted(seen.values(), key=lambda e: str(e.get("when")))


def tested_groups(ledgers: list[Path]) -> dict[str, dict]:
    """Every object (group) an earlier look tested -> the first entry that tested it."""
    out: dict[str, dict] = {}
    for path in ledgers:
        for values in read(path).values():
            for entry in values:
                for group in entry.get("test_groups") or []:
                    out.setdefault(group, entry)
    return out


def record(paths: list[Path], key: str, entry: dict) -> dict:
    """Append one look to every ledger file in `paths` (atomic writes)."""
    entry = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **entry}
    for path in paths:
        ledger = read(path)
        ledger.setdefault(key, []).append(entry)
        atomic_write_text(path, json.dumps(ledger, indent=2))
    return entry


def check_first_look(splits: dict, ledgers: list[Path], force: bool) -> tuple[list[dict], dict[str, dict]]:
    """The rule, before a look: refuse (unless `force`, which is recorded) test objects looked at before, and a run
    that trained or validated on objects an earlier look tested. -> (earlier looks at these test objects, tested
    objects the run trained or validated on)."""
    previous = entries(ledgers, split_key(splits))
    tested = tested_groups(ledgers)
    if previous and not force:
        first = previous[0]
        raise ReleaseError(f"the test objects of this split ({', '.join(splits['groups']['test'])}) were already "
                           f"evaluated on {first['when']} for {Path(str(first.get('checkpoint'))).name} (ledgers: "
                           f"{', '.join(map(str, ledgers))}). The test set is looked at once: release on objects no "
                           f"one has tested, or use --force to look again (recorded in the release and the README)")
    again = {g: tested[g] for g in splits["groups"].get("test", []) if g in tested}
    if again and not force:  # one object is enough: a subset or a new mix of tested objects is not a first look
        raise ReleaseError("this split's test set holds objects an earlier look tested: " + "; ".join(
            f"{g} ({e.get('release', '?')}, {e.get('when', '?')})" for g, e in sorted(again.items())) +
            ". Each test object is looked at once: exclude them (data.split.exclude) so that the test set holds only "
            "untested objects, or name this with --force (recorded)")
    previous += [e for e in again.values() if e not in previous]
    seen_split = set(splits["groups"].get("train", [])) | set(splits["groups"].get("val", []))
    reused = {g: e for g, e in tested.items() if g in seen_split}
    if reused and not force:
        raise ReleaseError(f"this run trains or validates on objects that an earlier release tested "
                           f"({', '.join(sorted(reused))}; first tested on {min(e['when'] for e in reused.values())}): "
                           f"its numbers would not be on unseen objects. Choose a split whose train and validation "
                           f"avoid them, or name this with --force (recorded)")
    return previous, reused
