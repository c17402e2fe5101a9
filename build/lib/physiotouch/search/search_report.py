"""What a search leaves in its sweep folder: best parameters (`best_params.yaml`, and hydra-optuna-sweeper's
`optimization_results.yaml`), a trials table, history and importance plots, and `search_report.md`."""

from __future__ import annotations

import csv
import logging
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from physiotouch.utils.figures import save_figure  # noqa: E402
from physiotouch.utils.markdown import table  # noqa: E402

log = logging.getLogger(__name__)


def write_search_report(study: optuna.Study, out: Path, search: dict) -> dict:
    trials = study.trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and not t.user_attrs.get("penalised")]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL or t.user_attrs.get("penalised")]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    names = sorted({k for t in trials for k in t.params})
    with (out / "trials.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["number", "state", "value", *names, "epochs_reported", "duration_s", "fail_reason",
                         "job_dir"])
        for t in trials:
            duration = t.duration.total_seconds() if t.duration else ""
            writer.writerow([t.number, t.state.name, t.value, *[t.params.get(n) for n in names],
                             len(t.intermediate_values), duration, t.user_attrs.get("fail_reason", ""),
                             t.user_attrs.get("job_dir", "")])
    best = None
    if complete:
        reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
        best = sorted(complete, key=lambda t: t.value, reverse=reverse)[0]
        OmegaConf.save(OmegaConf.create({"study": study.study_name, "stage": search.get("stage"),
                                         "best_value": best.value, "best_params": best.params,
                                         "best_trial": best.number, "job_dir": best.user_attrs.get("job_dir")}),
                       out / "best_params.yaml")
        # The form hydra-optuna-sweeper wrote, for tools that read it.
        OmegaConf.save(OmegaConf.create({"name": "optuna", "best_params": best.params, "best_value": best.value}),
                       out / "optimization_results.yaml")
    plots = _plots(study, out, complete)
    reasons = Counter(t.user_attrs.get("fail_reason", "stale (sweep interrupted)").split("\n")[0][:120]
                      for t in failed)
    lines = [f"# Search report: study `{study.study_name}` ({search.get('stage', 'search')})", "",
             f"- objective: `{search.get('metric', 'optimized_metric')}`, {study.direction.name.lower()}, on the "
             f"validation split only",
             f"- trials: {len(trials)} in the study: {len(complete)} complete, {len(failed)} failed, "
             f"{len(pruned)} pruned"
             + (", failures recorded with a penalty" if search.get("failure_penalty") is not None else ""),
             f"- epochs trained (validation epochs reported): {sum(len(t.intermediate_values) for t in trials)}", ""]
    if reasons:
        lines += ["## Failures", "", *table(["count", "reason"], [[n, r] for r, n in reasons.most_common()]), ""]
    if best is not None:
        lines += ["## Best trial", "", f"trial {best.number}: **{best.value:.6g}**", "",
                  *table(["parameter", "value"], [[k, v] for k, v in best.params.items()]), ""]
    rows = [[t.number, t.state.name, "-" if t.value is None else f"{t.value:.6g}",
             *[_fmt(t.params.get(n)) for n in names]] for t in trials]
    lines += ["## Trials", "", *table(["#", "state", "value", *names], rows)]
    lines += ["", *[f"![{p.stem}]({p.name})" for p in plots]]
    (out / "search_report.md").write_text("\n".join(lines) + "\n")
    summary = {"trials": len(trials), "complete": len(complete), "pruned": len(pruned), "failed": len(failed),
               "failure_reasons": dict(reasons), "best_value": best.value if best else None}
    log.info("search report: %s", summary)
    return summary


def append_confirmation(sweep_dir: Path, confirm_dir: Path, summary: dict, metric: str) -> dict:
    """The confirmation stage's runs (the best configuration over object folds x seeds) beside the search's best:
    appended to search_report.md and written to confirmation.yaml. The fold is the replicate (its seeds share its
    validation objects, so they are averaged within the fold first)."""
    from physiotouch.experiments.runs import find_runs

    runs, skipped = find_runs([confirm_dir])
    by_fold: dict = defaultdict(list)
    for run in runs:
        value = run.summary.get("optimized_value")
        if value is not None:
            by_fold[(run.splits.get("split") or {}).get("fold")].append(float(value))
    folds = {str(k): statistics.fmean(v) for k, v in sorted(by_fold.items(), key=lambda kv: str(kv[0]))}
    values = list(folds.values())
    result = {"metric": metric, "runs": len(runs), "skipped": skipped, "per_fold": folds,
              "mean_over_folds": statistics.fmean(values) if values else None,
              "sd_over_folds": statistics.stdev(values) if len(values) >= 2 else None,
              "search_best_value": summary.get("best_value")}
    OmegaConf.save(OmegaConf.create(result), sweep_dir / "confirmation.yaml")
    fmt = lambda v: "-" if v is None else f"{v:.6g}"  # noqa: E731
    lines = ["", "## Confirmation across objects (search.confirm=true)", "",
             f"The best configuration re-run over object folds x seeds (`{confirm_dir.name}/`, "
             f"`confirm_command.txt`); seeds averaged within a fold, the fold is the replicate.", "",
             *table(["", metric], [["search's best trial (one split, one seed)", fmt(summary.get("best_value"))],
                                   [f"confirmed: mean over {len(values)} folds", fmt(result["mean_over_folds"])],
                                   ["confirmed: SD across folds", fmt(result["sd_over_folds"])],
                                   *[[f"fold {k}", fmt(v)] for k, v in folds.items()]])]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped)]
    with (sweep_dir / "search_report.md").open("a") as fh:
        fh.write("\n".join(lines) + "\n")
    return result


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _plots(study: optuna.Study, out: Path, complete: list) -> list[Path]:
    import warnings

    from optuna.visualization import matplotlib as ovm

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the matplotlib plots

    made = []
    if complete:
        ax = ovm.plot_optimization_history(study)
        ax.set_ylabel("objective (validation)")
        made.append(_save(ax, out / "optimization_history.png"))
    if len(complete) >= 2 and len({k for t in complete for k in t.params}) >= 1:
        try:
            ax = ovm.plot_param_importances(study)
            made.append(_save(ax, out / "param_importances.png"))
        except (RuntimeError, ValueError, ZeroDivisionError) as err:  # e.g. no variation among the trials
            log.info("no parameter-importance plot: %s", err)
    plt.close("all")
    return made


def _save(ax, path: Path) -> Path:
    return save_figure(ax.figure if hasattr(ax, "figure") else ax[0].figure, path, size=(8, 5))
