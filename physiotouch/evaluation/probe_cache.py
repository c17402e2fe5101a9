"""The controls' tuned probes, kept on disk and read back when nothing they depend on has changed.

Why: a control's probes (raw pixels, pixel change, contact features, the untrained network) depend on the control's
features, the tasks (labels, folds, groups), the probe settings and the fitting code, never on the model evaluated
beside them. Every run of a folds x seeds comparison is evaluated against the same pixel controls (and, for one
architecture, the same seeded untrained network), and their tuned fits are most of an evaluation's time: fitting them
once per data set instead of once per run is the largest saving there is without changing the protocol.

An entry's name is a hash of all of it: the features' bytes (not where they came from), every task's labels, folds and
groups, the settings, the source of the modules that fit and score probes, and the library versions. Any change gives
another name, so a stale entry is never read; old entries are simply never read again (delete the folder to free the
space). Entries are one `.npz` each, written whole or not at all, read with `allow_pickle=False` (nothing in a file is
ever executed); an unreadable entry is reported in one line and refitted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import sklearn
import torch
import torchmetrics

from physiotouch.utils.files import atomic_write

log = logging.getLogger(__name__)

FORMAT = 2  # bump when an entry's layout or meaning changes (2: every probe fit on one torch thread)
# what turns features and tasks into metrics
FITTING_CODE = ("probes.py", "tuned.py", "probe_fits.py", "logistic.py", "lbfgs.py")


def _update(h, a: np.ndarray | None) -> None:
    if a is None:
        h.update(b"none")
        return
    a = np.asarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(json.dumps(a.tolist()).encode() if a.dtype == object else np.ascontiguousarray(a).tobytes())


def entry_name(x: np.ndarray, tasks: list, pcfg) -> str:
    """The hash of everything a feature set's probe results depend on (see the module's docstring)."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in FITTING_CODE:
        h.update((here / name).read_bytes())
    h.update(json.dumps([FORMAT, torch.__version__, np.__version__, sklearn.__version__, torchmetrics.__version__,
                         asdict(pcfg)],
                        sort_keys=True, default=str).encode())
    _update(h, x)
    for task in tasks:
        h.update(json.dumps([task.name, task.prefix, list(task.kinds), task.classes], default=str).encode())
        _update(h, task.y)
        _update(h, task.groups)
        for fit, tested in task.folds:
            _update(h, fit)
            _update(h, tested)
    return h.hexdigest()[:40]


class ProbeCache:
    """`lookup` -> (entry name, (metrics, choices, predictions) or None); `store` writes an entry."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.hits: list[str] = []  # the labels read back, for the report's last line

    def lookup(self, label: str, x: np.ndarray, tasks: list, pcfg) -> tuple[str, tuple | None]:
        name = entry_name(x, tasks, pcfg)
        path = self.folder / f"{name}.npz"
        if not path.is_file():
            return name, None
        try:
            with np.load(path, allow_pickle=False) as entry:
                head = json.loads(str(entry["head"]))
                preds = {key: entry[f"pred{i}"] for i, key in enumerate(head["pred_keys"])}
            metrics, choices = head["metrics"], head["choices"]
            if not (isinstance(metrics, dict) and all(isinstance(v, (int, float)) for v in metrics.values())
                    and isinstance(choices, dict) and all(p.dtype.kind == "f" for p in preds.values())):
                raise ValueError("not what this cache writes")
            result = metrics, choices, preds
        except Exception as err:  # any damage: refit and overwrite, never fail the evaluation for a cache
            log.warning("probe cache: %s is unreadable (%s: %s); refitting %s", path, type(err).__name__, err, label)
            return name, None
        self.hits.append(label)
        log.info("control %s: its probes read from the cache (%s)", label, path)
        return name, result

    def store(self, name: str, metrics: dict, choices: dict, preds: dict) -> None:
        keys = sorted(preds)
        head = json.dumps({"metrics": metrics, "choices": choices, "pred_keys": keys})
        try:  # whole or not at all, also beside another writer
            atomic_write(self.folder / f"{name}.npz", lambda fh: np.savez(
                fh, head=np.array(head), **{f"pred{i}": preds[k] for i, k in enumerate(keys)}))
        except OSError as err:  # a read-only data folder: the evaluation goes on without the cache
            log.warning("probe cache: cannot write in %s (%s); set eval.probe_cache=false to stop trying",
                        self.folder, err)
