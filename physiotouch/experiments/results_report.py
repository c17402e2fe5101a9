"""The results report over finished runs: the researchers' table, per-configuration statistics, comparisons on
shared seeds, learning / ratio / contribution curves, health verdicts, and the best checkpoint by validation.

Every number comes from the runs' own files (history.json, summary.json, health.json, eval/metrics.json); no test
split number is ever read here.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from physiotouch.utils.figures import save_figure  # noqa: E402
from physiotouch.utils.markdown import inert  # noqa: E402
from physiotouch.utils.markdown import table as md_table  # noqa: E402

from .against_controls import against_controls, against_controls_section  # noqa: E402
from .per_object import per_object_section, per_object_values  # noqa: E402
from .replicates import compare, holm, summarise  # noqa: E402,F401 - holm: used by tests through here
from .runs import Run, RunError, check_comparable, commits, find_runs, flat  # noqa: E402

# The composite objective's terms, shown beside it (each can also be the main metric: --main val/loss_pred).
TERMS = ("val/loss_static", "val/loss_recon", "val/loss_pred")

# Resolved settings that differ between replicates of one configuration, or only name where a run was written.
REPLICATE_KEYS = ("seed", "data.seed", "data.split.fold", "paths.", "hydra.", "callbacks.", "logger.", "data.root",
                  "data.index", "data.cache_dir", "trainer.default_root_dir", "ckpt_path", "task_name", "tags")


def config_notes(runs: list[Run]) -> dict[Path, str]:
    """A run's configuration = its resolved settings that vary between the runs (`loss.name=equal`), replicates'
    own settings (seed, K-fold fold, paths) excluded. Resolved values, so `False` and `false` are one setting."""
    per_run = {r.path: {k: v for k, v in flat(r.config).items() if not k.startswith(REPLICATE_KEYS)} for r in runs}
    keys = sorted({k for d in per_run.values() for k in d})
    varying = [k for k in keys if len({repr(d.get(k)) for d in per_run.values()}) > 1]
    # A config group chosen by name (loss=equal) reads as that choice; its keys that the name alone decides are
    # not repeated, the ones set on top of it are (loss=equal loss.alpha=0.3).
    named = {k[:-len(".name")] for k in varying if k.endswith(".name") and "." not in k[:-len(".name")]}

    def decided_by_name(key: str) -> bool:
        group = key.split(".")[0]
        seen: dict[str, str] = {}  # the group's name -> this key's value under it
        return group in named and all(seen.setdefault(repr(d.get(f"{group}.name")), repr(d.get(key))) ==
                                      repr(d.get(key)) for d in per_run.values())

    def note(d: dict) -> str:
        parts = [f"{k[:-len('.name')]}={_value(d.get(k))}" if k[:-len(".name")] in named and k.endswith(".name")
                 else f"{k}={_value(d.get(k))}" for k in varying if k.endswith(".name") or not decided_by_name(k)]
        return " ".join(parts) or "all runs"

    return {p: note(d) for p, d in per_run.items()}


def _value(v) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def build_report(folders: list[Path], out: Path | None = None, main: str = "val/objective", main_mode: str = "min",
                 secondary: str = "val/loss_pred", secondary_mode: str = "min", allow_mixed: bool = False) -> dict:
    runs, skipped = find_runs(folders)
    for line in skipped:
        print(f"warning: skipped {line}", file=sys.stderr)
    pruned = [r for r in runs if r.summary.get("pruned_at_epoch") is not None]  # stopped early: not comparable
    runs = [r for r in runs if r.summary.get("pruned_at_epoch") is None]
    if not runs:
        raise RunError(f"every run under {', '.join(map(str, folders))} was pruned by its search; nothing to compare")
    mixed = check_comparable(runs, allow_mixed)
    code = commits(runs)
    for metric in (main, secondary):
        if not any(r.metric(metric) is not None for r in runs):
            known = sorted({k for r in runs for row in r.history for k in row if k.startswith("val/")} |
                           {k for r in runs for k in r.eval_metrics})
            raise RunError(f"no run has the metric {metric!r}; validation metrics these runs have: {', '.join(known)}")
    out = out or folders[0]
    out.mkdir(parents=True, exist_ok=True)
    notes = config_notes(runs)
    extra = sorted({k for r in runs for k in r.eval_metrics  # each linear probe's headline number
                    if k.startswith("val/probe_") and k.endswith(("_accuracy", "_r2")) and "_knn_" not in k})
    table = []
    for r in sorted(runs, key=lambda r: (notes[r.path], r.replicate)):
        best = r.best_row(main, main_mode)
        table.append({**{k: best[k] for k in TERMS if k in best},  # the objective's terms at the chosen epoch
                      "run": str(r.path), "config": notes[r.path], "scheme": r.scheme, "seed": r.seed,
                      "replicate": r.replicate, "unit": r.unit,
                      main: r.metric(main, main_mode),
                      secondary: best.get(secondary, r.metric(secondary, secondary_mode)),
                      "best_epoch": best.get("epoch"), "train_seconds": r.summary.get("summary/total_time_seconds"),
                      "checkpoint": r.checkpoint_id(), "health": r.health.get("overall", "-"),
                      **{k: r.eval_metrics.get(k) for k in extra}})
    per_unit: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in table:  # seeds of one object fold are averaged: the fold is the replicate (Run.unit)
        if row[main] is not None:
            per_unit[row["config"]][row["unit"]].append(row[main])
    per_config = {c: {u: statistics.fmean(v) for u, v in units.items()} for c, units in per_unit.items()}
    stats_rows = {c: summarise(list(v.values())) for c, v in per_config.items()}
    secondary_stats = {c: summarise([r[secondary] for r in table if r["config"] == c and r[secondary] is not None])
                       for c in per_config}
    comparisons = compare(per_config)
    pick = min if main_mode == "min" else max
    best_run = pick((r for r in table if r[main] is not None), key=lambda r: r[main])
    best_summary = next(x for x in runs if str(x.path) == best_run["run"]).summary

    _write_csv(out / "report.csv", table, stats_rows, main)
    plots = [_learning_curves(runs, notes, out), _ratio_curves(runs, notes, out),
             _metric_bars(per_config, stats_rows, main, out), _weights_overview(runs, notes, out)]
    md = _markdown(table, stats_rows, secondary_stats, comparisons, runs, main, main_mode, secondary, extra,
                   best_run, best_summary, plots)
    # Text from run folders (paths, reasons, commits) is made inert: no line, heading or HTML of its own.
    notices = [f"**Mixed settings (--allow-mixed): these runs' numbers are not comparable.** {inert(m)}" for m in mixed]
    if len(code) > 1:
        notices.append("**Warning: the runs were made with different code:** " + "; ".join(
            f"`{inert(c[:12])}{'+dirty' if c.endswith('+dirty') else ''}` ({len(p)} runs)" for c, p in code.items()))
    if pruned:
        notices.append(f"**{len(pruned)} pruned by the search** (stopped early by the pruner, left out of the "
                       "comparison): " + ", ".join(f"`{inert(r.path.name)}` after epoch "
                                                  f"{inert(r.summary['pruned_at_epoch'])}"
                                                  for r in pruned))
    if skipped:
        notices.append("**Skipped run folders:**\n" + "".join(f"- {inert(s)}\n" for s in skipped))
    versus = against_controls(runs, notes)
    (out / "against_controls.json").write_text(json.dumps(versus, indent=1))
    md += "\n".join(["", *against_controls_section(versus), *per_object_section(per_object_values(runs, notes), out)])
    if notices:
        head, rest = md.split("\n", 1)
        md = head + "\n\n" + "\n\n".join(notices) + "\n" + rest
    (out / "report.md").write_text(md)
    return {"table": table, "stats": stats_rows, "comparisons": comparisons, "best": best_run, "out": str(out),
            "skipped": skipped, "mixed": mixed, "against_controls": versus}


def _write_csv(path: Path, table: list[dict], stats_rows: dict, main: str) -> None:
    fields = ["kind", *dict.fromkeys(k for row in table for k in row)]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in table:
            writer.writerow({"kind": "run", **row})
        for config, s in stats_rows.items():
            for stat in ("mean", "std", "ci95_low", "ci95_high"):
                writer.writerow({"kind": stat, "config": config, main: s[stat], "seed": f"n={s['n']}"})


def _markdown(table, stats_rows, secondary_stats, comparisons, runs, main, main_mode, secondary, extra, best_run,
              best_summary, plots) -> str:
    data_version = runs[0].splits.get("data_version")
    lines = ["# Results report", "",
             f"{len(runs)} runs, data version `{data_version}`, one split (checked). Main metric `{main}` "
             f"({'lower' if main_mode == 'min' else 'higher'} is better, best epoch of each run), secondary "
             f"`{secondary}` at that epoch. Validation split only.", "",
             "## Runs", ""]

    def duration(t) -> str:
        return f"{int(t // 3600):02d}:{int(t % 3600 // 60):02d}:{int(t % 60):02d}" if t else "-"

    lines += md_table(["Run", "Config", "Replicate", f"{main} (val)", f"{secondary} (val)", *extra, "Training time",
                       "Checkpoint", "Health"],
                      [[Path(r["run"]).name, r["config"], r["replicate"], _fmt(r[main]), _fmt(r[secondary]),
                        *[_fmt(r[k]) for k in extra], duration(r["train_seconds"]), r["checkpoint"], r["health"]]
                       for r in table])
    terms = [k for k in TERMS if k not in (main, secondary) and any(k in r for r in table)]
    rows = []
    for c, s in sorted(stats_rows.items(), key=lambda kv: kv[1]["mean"], reverse=main_mode == "max"):
        s2 = secondary_stats[c]
        term_stats = [summarise([r[k] for r in table if r["config"] == c and r.get(k) is not None]) for k in terms]
        rows.append([c, s["n"], f"{_fmt(s['mean'])} ± {_fmt(s['std'])}",
                     f"[{_fmt(s['ci95_low'])}, {_fmt(s['ci95_high'])}]", f"{_fmt(s2['mean'])} ± {_fmt(s2['std'])}",
                     *[f"{_fmt(t['mean'])} ± {_fmt(t['std'])}" for t in term_stats]])
    lines += ["", "## Per configuration (mean ± std, 95% CI over replicates: object folds, seeds averaged within a "
                  "fold; seeds without K-fold)", "",
              *md_table(["Config", "n", f"{main} mean ± std", "95% CI", f"{secondary} mean ± std",
                         *[f"{k} mean ± std" for k in terms]], rows)]
    if comparisons:
        lines += ["", "## Paired comparisons on shared replicates (paired t-test, Holm-adjusted; the replicate is the "
                  "object fold, its seeds averaged, or the seed without K-fold)", "",
                  *md_table(["A", "B", "shared replicates", "mean(A − B) [95% CI]", "d_z", "smallest detectable", "p",
                             "p (Holm)"],
                            [[c["a"], c["b"], ", ".join(map(str, c["shared"])) or "-",
                              f"{_fmt(c['mean_diff'])} [{_fmt(c['diff_ci95_low'])}, {_fmt(c['diff_ci95_high'])}]",
                              _fmt(c["effect_dz"], 3), _fmt(c["mdd"]), _fmt(c["p_value"], 3), _fmt(c["p_holm"], 3)]
                             for c in comparisons])]
        lines.append("\nA comparison needs at least 2 shared replicates; '-' means it could not be made. The smallest "
                     "detectable difference is what a paired t-test on these replicates finds with 80% power at "
                     "5%: a |mean(A − B)| below it is no detectable difference, not evidence of none.")
    by_path = {str(r.path): r.health for r in runs}
    lines += ["", "## Health verdicts", "", *md_table(["Run", "Config", "Replicate", "overall", "failed rules"], [
        [Path(r["run"]).name, r["config"], r["replicate"], by_path[r["run"]].get("overall", "-"),
         ", ".join(k for k, v in by_path[r["run"]].get("rules", {}).items() if v.get("verdict") == "fail") or "-"]
        for r in table])]
    lines += ["", "## Best checkpoint (chosen by validation, never by a test number)", "",
              f"`{best_summary.get('best_checkpoint')}` — run `{best_run['run']}` ({best_run['config']}, "
              f"{best_run['replicate']}), {main} = {_fmt(best_run[main])}.", "", "## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots if p]
    return "\n".join(lines) + "\n"


def _by_config(runs: list[Run], notes: dict) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        groups[notes[r.path]].append(r)
    return dict(sorted(groups.items()))


def _curves(runs, notes, out: Path, rows: list[tuple[str, str]], name: str, title: str) -> Path:
    groups = _by_config(runs, notes)
    fig, axes = plt.subplots(len(rows), len(groups), figsize=(4.2 * len(groups), 3.2 * len(rows)), squeeze=False)
    for j, (config, members) in enumerate(groups.items()):
        for i, (key, label) in enumerate(rows):
            ax = axes[i][j]
            for r in sorted(members, key=lambda r: r.replicate):
                pts = [(row["epoch"], row[key]) for row in r.history if key in row]
                if pts:
                    ax.plot(*zip(*pts), marker=".", label=r.replicate)
            ax.set_xlabel("epoch (-1 = before training)" if key.startswith("val/") else "epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(config, fontsize=9)
            if ax.lines and i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, out / name)


def _learning_curves(runs, notes, out):
    return _curves(runs, notes, out, [("epoch/train_loss", "train loss (scheme's own total)"),
                                      ("val/objective", "val/objective (static + dynamic)")],
                   "learning_curves.png", "Learning curves per configuration (every seed)")


def _ratio_curves(runs, notes, out):
    return _curves(runs, notes, out, [("epoch/loss_ratio", "loss_ratio = static / dynamic"),
                                      ("epoch/actual_static_contribution", "static share of weighted loss")],
                   "ratio_contribution_curves.png", "loss_ratio and static contribution per configuration")


def _weights_overview(runs, notes, out):
    """One line per configuration (mean over replicates): the static weight used, the static share of the weighted
    loss, and val/objective, against the epoch: how each balancing scheme behaves, side by side."""
    keys = [("epoch/alpha", "α used (static weight)"), ("epoch/actual_static_contribution", "static share of loss"),
            ("val/objective", "val/objective")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for i, (config, members) in enumerate(_by_config(runs, notes).items()):
        color = f"C{i % 10}"  # one colour per configuration in every panel (some lack a metric)
        for ax, (key, label) in zip(axes, keys):
            per_epoch = defaultdict(list)
            for r in members:
                for row in r.epochs():
                    if key in row:
                        per_epoch[row["epoch"]].append(row[key])
            if per_epoch:
                xs = sorted(per_epoch)
                ax.plot(xs, [statistics.fmean(per_epoch[x]) for x in xs], marker=".", label=config, color=color)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[1].axhline(0.5, color="k", ls=":", lw=0.8)
    axes[2].legend(fontsize=7)  # val/objective exists for every scheme
    fig.suptitle("Loss balancing per configuration (mean over replicates)")
    return save_figure(fig, out / "weights_overview.png")


def _metric_bars(per_config, stats_rows, main, out):
    configs = sorted(per_config)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(configs)), 4))
    means = [stats_rows[c]["mean"] for c in configs]
    errs = [(stats_rows[c]["ci95_high"] - stats_rows[c]["mean"]) if stats_rows[c]["n"] >= 2 else 0 for c in configs]
    ax.bar(range(len(configs)), means, yerr=errs, capsize=4, color="#8fb3d9", label="mean ± 95% CI")
    for i, c in enumerate(configs):
        ax.scatter([i] * len(per_config[c]), list(per_config[c].values()), color="k", s=12, zorder=3)
    ax.set_xticks(range(len(configs)), configs, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"{main} (best epoch, validation)")
    ax.set_title("Main validation metric per configuration (dots: seeds)")
    lo = min(min(v.values()) for v in per_config.values())
    hi = max(max(v.values()) for v in per_config.values())
    ax.set_ylim(lo - 0.2 * (hi - lo + 1e-9), hi + 0.2 * (hi - lo + 1e-9))
    return save_figure(fig, out / "main_metric.png")
