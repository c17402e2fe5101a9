"""Per-object values: how each configuration does on every validation object, and the spread across objects.

Under object-grouped K-fold every non-test object is a validation object in exactly one fold, so a configuration's
runs (folds × seeds) together score every object. The value of an object is the validation objective (static +
reconstruction + prediction loss, fixed masks) of the runs' evaluation (`evaluate_after_training=true` or
`python -m physiotouch.evaluate`), averaged over the seeds. A configuration that wins on the mean but loses on half
the objects is visible here; the spread across objects says how much one split of two objects can mislead.
"""

from __future__ import annotations

import csv
import re
import statistics
from collections import defaultdict
from pathlib import Path

from physiotouch.utils.markdown import table

OBJECT_KEY = re.compile(r"^val/recon_static_object_(.+)$")
TERMS = ("static", "recon", "pred")


def per_object_values(runs: list, notes: dict) -> dict[str, dict[str, list[float]]]:
    """-> {config: {object: [objective per run that validated on it]}} from the runs' eval/metrics.json."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for key in run.eval_metrics:
            match = OBJECT_KEY.match(key)
            if match:
                obj = match.group(1)
                terms = [run.eval_metrics.get(f"val/recon_{t}_object_{obj}") for t in TERMS]
                if all(v is not None for v in terms):
                    values[notes[run.path]][obj].append(float(sum(terms)))
    return {c: dict(v) for c, v in values.items()}


def per_object_section(values: dict[str, dict[str, list[float]]], out: Path) -> list[str]:
    """Markdown lines (and `per_object.csv`): one row per object, one column per configuration."""
    if not values:
        return []
    configs = sorted(values)
    objects = sorted({o for v in values.values() for o in v})
    mean = {c: {o: statistics.fmean(values[c][o]) for o in values[c]} for c in configs}
    with (out / "per_object.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["object", *configs])
        writer.writerows([o, *[mean[c].get(o, "") for c in configs]] for o in objects)
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines = ["## Per validation object (validation objective, mean over seeds)", "",
             "Each object is validated in one fold; lower is better. The last rows summarise across objects: a "
             "difference between configurations smaller than this spread is not a property of the objects in general.",
             ""]
    rows = [[o, *[fmt(mean[c].get(o)) for c in configs]] for o in objects]
    for label, fn in (("mean over objects", statistics.fmean), ("SD across objects", statistics.stdev),
                      ("min", min), ("max", max)):
        rows.append([f"*{label}*", *[fmt(fn(list(mean[c].values()))) if len(mean[c]) >= 2 else "-" for c in configs]])
    lines += table(["object", *configs], rows)
    if len(configs) >= 2:
        best = {o: min(configs, key=lambda c: mean[c].get(o, float("inf"))) for o in objects}
        lines += ["", "Best configuration per object: " + ", ".join(
            f"{c} on {sum(b == c for b in best.values())}" for c in configs) + f" of {len(objects)} objects."]
    return lines + [""]
