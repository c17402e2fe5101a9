"""Does a configuration beat its controls across replicates, not just in one run?

Each run's evaluation gives, per probe, the model's value and each control's (eval/metrics.json "controls"), with a
verdict over that run's objects. That verdict holds for that checkpoint only: it cannot see how much another
training seed would change the model (untrained networks of two seeds already differ "detectably" in a third of
paired comparisons within one evaluation; README, evaluation). A claim about a configuration therefore needs the
difference model − control on every replicate: per object fold (seeds averaged within it; `Run.unit`), then the
95% t-interval over folds and the same verdict rule (evaluation/verdicts.py).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

import numpy as np

from physiotouch.evaluation.verdicts import interval_verdict
from physiotouch.utils.markdown import table

SHOWN = ("_accuracy", "_r2")  # the headline metric of each probe (a class probe's accuracy, a regression's R²)
MIN_REPLICATES = 3  # two replicates give a t-interval 12.7 standard errors wide (df = 1): no verdict


def against_controls(runs: list, notes: dict) -> list[dict]:
    """-> one row per (configuration, probe metric, control): the mean over replicates of model − control, its
    interval and verdict, and how the runs' own per-object verdicts came out."""
    diffs: dict = defaultdict(lambda: defaultdict(list))  # (config, key, control) -> unit -> [diff per run]
    own: dict = defaultdict(list)  # (config, key, control) -> each run's own verdict
    for run in runs:
        controls = run.eval_metrics.get("controls")
        if not isinstance(controls, dict):
            continue
        for key, row in controls.items():
            value = run.eval_metrics.get(key)
            if not key.startswith("val/probe_") or not key.endswith(SHOWN) or not isinstance(value, (int, float)):
                continue
            for control, c in row.items():
                if isinstance(c, dict) and isinstance(c.get("value"), (int, float)):
                    diffs[notes[run.path], key, control][run.unit].append(value - c["value"])
                    own[notes[run.path], key, control].append(c.get("verdict", "-"))
    return [{"config": config, "metric": key, "control": control, **replicated_verdict(units, key),
             "run_verdicts": own[config, key, control]} for (config, key, control), units in sorted(diffs.items())]


def replicated_verdict(units: dict[str, list[float]], metric: str) -> dict:
    """{replicate: [A − B of each run in it]} -> the mean over replicates (each the mean of its runs), its 95%
    t-interval and verdict (evaluation/verdicts.py); `insufficient data` under MIN_REPLICATES replicates."""
    per_unit = np.array([statistics.fmean(v) for v in units.values()])
    out = {"replicates": len(per_unit), "diff": float(per_unit.mean()) if len(per_unit) else math.nan,
           "diff_ci95": None, "verdict": "insufficient data"}
    if len(per_unit) >= MIN_REPLICATES:
        out.update(interval_verdict(per_unit, metric))
    return out


def against_controls_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    fmt = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.3f}"  # noqa: E731

    def counts(verdicts: list[str]) -> str:
        return ", ".join(f"{v} {verdicts.count(v)}" for v in dict.fromkeys(verdicts))

    return ["## Against the controls, across replicates", "",
            "Per run: the model's probe value minus the control's (same clips, same tuned probe); per replicate (the "
            "object fold, its seeds averaged): their mean; then the 95% t-interval over replicates. **better** only "
            "when the whole interval is above zero; under 3 replicates, insufficient data. The last column counts "
            "each run's own verdict over its objects, which cannot see seed-to-seed variation.", "",
            *table(["config", "metric", "control", "replicates", "mean Δ [95% CI]", "verdict", "runs' own verdicts"], [
                [r["config"], r["metric"], r["control"], r["replicates"],
                 f"{fmt(r['diff'])} [{fmt(r['diff_ci95'][0])}, {fmt(r['diff_ci95'][1])}]" if r["diff_ci95"]
                 else fmt(r["diff"]), f"**{r['verdict']}**" if r["verdict"] == "better" else r["verdict"],
                 counts(r["run_verdicts"])] for r in rows]), ""]
