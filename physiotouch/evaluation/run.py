"""Evaluation of a trained encoder on the train and validation splits: probes, stratified reconstruction,
robustness to input perturbations, pictures. Writes `metrics.json` (flat), `report.md`, `index.md` and PNGs.
The test split is not touched (the release command evaluates it, once)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from physiotouch.run_folder import RunDir
from physiotouch.utils.progress import progress
from physiotouch.utils.threads import beside, in_thread
from physiotouch.utils.timing import PhaseTimer

from . import plots
from .controls import control_features, control_results, control_work, controls_for, discard, fit_controls
from .encoder import encode, encode_each
from .features import ERRORS, example_outputs
from .fit_worker import FitWorker
from .probe_cache import ProbeCache
from .probes import Task, build_tasks, headline_metrics, pool, probe_splits, run_probes
from .report_md import write_report
from .robustness import DEFAULT_STRENGTHS, make_perturbation
from .settings import EvalConfig, ProbeConfig
from .targets import clip_targets
from .verdicts import paired

log = logging.getLogger(__name__)


def _objective(f: dict) -> np.ndarray:
    return f["objective"]  # per clip, by the model's own definition (TactileVideoMAE.objective)


def reconstruction_metrics(val: dict) -> tuple[dict[str, float], dict]:
    """Validation losses overall, per object, per sensor, per frame position; the copy-shortcut comparison."""
    m = {f"val/recon_{k}": float(val[k].mean()) for k in ERRORS}
    m["val/recon_objective"] = float(_objective(val).mean())
    for i in range(1, 5):
        m[f"val/recon_frame{i}"] = float(val[f"frame{i}"].mean())
    m["val/pred_beats_copy_fraction"] = float((val["pred"] < val["copy_frame3"]).mean())
    for name in ("copy_own_frame3", "copy_visible_frame3"):  # the input-matched copies (features.per_clip_errors)
        m[f"val/recon_{name}"] = float(val[name].mean())
        m[f"val/pred_beats_{name}_fraction"] = float((val["pred"] < val[name]).mean())
    for term in ("static", "recon", "pred"):  # the mean-frame baseline on the patches each term scores
        m[f"val/recon_{term}_mean_frame"] = float(val[f"mean_{term}"].mean())
    groups = {}
    for by in ("object_name", "sensor_name"):
        table = {}
        for g in sorted(set(val[by])):
            sel = val[by] == g
            table[str(g)] = {k: float(val[k][sel].mean()) for k in ERRORS}
            table[str(g)]["beats_copy"] = float((val["pred"][sel] < val["copy_frame3"][sel]).mean())
            for k in ERRORS:
                m[f"val/recon_{k}_{by.split('_')[0]}_{g}"] = table[str(g)][k]
        groups[by] = table
    return m, groups


def robustness_encodings(model, datasets: dict, cfg: EvalConfig) -> tuple[list, dict]:
    """Each split read once and encoded under every (perturbation, strength) of the sweep; validation with its
    reconstruction objective (not the baselines beside it: the sweep reports the objective alone, and the baselines
    cost a third of the pass). -> (perturbations, {split: {perturbation label: features}})."""
    perturbations = [make_perturbation(kind, float(strength))
                     for kind, strengths in cfg.robustness.get("strengths", DEFAULT_STRENGTHS).items()
                     for strength in strengths]
    if not perturbations:
        return [], {}
    return perturbations, {s: encode_each(model, datasets[s], cfg.batch_size, cfg.mask_ratio, perturbations,
                                          errors="objective" if s == "val" else False, device=cfg.device,
                                          limit=cfg.max_clips, name=s) for s in ("train", "val")}


def robustness(clean: dict, perturbations: list, encoded: dict, tasks: list[Task], pcfg: ProbeConfig,
               fitted: dict) -> list[dict]:
    """The model's linear probes, fit once on the clean features (`fitted`, by probe key), tested on each
    perturbation's features (`robustness_encodings`)."""
    x_clean = pool(clean)["x"]
    rows = [{"perturbation": "clean", "strength": 0.0, **_robust_metrics(clean, x_clean, tasks, pcfg, fitted)}]
    for perturb in perturbations:
        feats = {s: encoded[s][perturb.label] for s in ("train", "val")}
        rows.append({"perturbation": perturb.kind, "strength": perturb.strength,
                     **_robust_metrics(feats, pool(feats)["x"], tasks, pcfg, fitted)})
        log.info("robustness %s: %s", perturb.label, rows[-1])
    for row in rows[1:]:
        for key, value in list(row.items()):
            if key.startswith("val/"):
                row[f"drop:{key}"] = rows[0][key] - value
    return rows


def _robust_metrics(feats: dict, x: np.ndarray, tasks: list[Task], pcfg: ProbeConfig, fitted: dict
                    ) -> dict[str, float]:
    out = {"val/recon_objective": float(_objective(feats["val"]).mean())}
    for task in tasks:
        if task.key("linear", "") in fitted and task.prefix.endswith("/probe_"):
            probe = fitted[task.key("linear", "")]
            pred = np.concatenate([probe.predict(f, x[t]) for f, (_, t) in enumerate(task.folds)])
            out.update({task.key("linear", k): v for k, v in headline_metrics(task, pred).items()})
    return out


ROBUSTNESS_PLOTS = ("val/recon_objective", "val/probe_object_accuracy", "val/probe_sensor_accuracy",
                    "val/probe_motion_accuracy", "val/probe_peak_depth_r2")  # a plot each, over the perturbations


def run_evaluation(model, datamodule, cfg: EvalConfig, out: Path, worker: FitWorker | None = None
                   ) -> dict[str, float]:
    """`worker`: a probe-fitting process (`fit_worker.started(cfg.fit_process)`, started by the caller as early as
    it can: its imports take seconds) that fits controls' probes beside this process."""
    out.mkdir(parents=True, exist_ok=True)
    timer = PhaseTimer()
    datasets = datamodule.datasets  # train and val only: the data module never builds the test split
    vocab = {k: v for k, v in datamodule.record["labels"].items()}
    pcfg = cfg.probe
    # Reconstruction errors are reported on validation only; the training split gives the probes their features.
    with timer.phase("encode"):
        feats = {s: encode(model, datasets[s], cfg.batch_size, cfg.mask_ratio, errors=s == "val", device=cfg.device,
                           limit=cfg.max_clips, name=s) for s in ("train", "val")}
    pooled = pool(feats)
    targets, not_run = clip_targets(datamodule.index, pooled, pcfg)
    tasks = build_tasks(pooled, vocab, targets, pcfg)
    not_run += missing_probes(tasks, targets, pooled)
    (out / "probe_splits.json").write_text(json.dumps(probe_splits(tasks, pooled["folder"]), indent=1))
    recon, groups = reconstruction_metrics(feats["val"])
    examples = _examples(model, datasets["val"], feats["val"], cfg)  # the model's passes stay in this thread
    fitted, preds = {}, {}

    cache = (ProbeCache(Path(cfg.probe_cache_dir or Path(datamodule.cache_dir) / "probes")) if cfg.probe_cache
             else None)
    with timer.phase("encode controls"):
        control_x = control_features(model, datasets, cfg.batch_size, cfg.device, cfg.max_clips, datamodule.seed)
    pending, fitted_controls = control_work(control_x, tasks), {}

    def probes_and_pictures() -> tuple[dict, dict, list[Path]]:
        with timer.phase("probes model"):
            metrics, curves, choices = run_probes(tasks, pooled["x"], pcfg, fitted_linear=fitted, predictions=preds)
        with timer.phase("plots"):
            pictures = _pictures(model, examples, curves, groups, recon, pcfg, out)
        if worker is None:
            fit_controls(pending, control_x, pcfg, cache, timer, fitted_controls)
        return metrics, choices, pictures

    def in_worker() -> None:
        if worker is not None:
            fit_controls(pending, control_x, pcfg, cache, timer, fitted_controls, worker)

    # The probe fits and pictures (small operations: one core runs them as fast as two) go to a second thread while
    # this one runs the robustness sweep's encodings (large operations) on the other cores; then the controls' probes
    # still to fit (most of a first evaluation on a data set; read from the cache afterwards): by the probe-fitting
    # process (fit_worker.py) from the start and this thread when done, or without that process by both threads when
    # done. Never two threads of this process fitting at once beside the process (measured on the default run: 32.3 s
    # against 35.5 s). The results are the same in any order: every probe is fit on one thread (probes.run_probes).
    robust = cfg.robustness.get("enabled", True)
    with beside(probes_and_pictures) as model_side, in_thread(in_worker, "physiotouch-fit-process") as worker_side:
        try:
            if robust:
                with timer.phase("robustness"):
                    perturbations, encoded = robustness_encodings(model, datasets, cfg)
            fit_controls(pending, control_x, pcfg, cache, timer, fitted_controls)
        except BaseException:
            discard(pending)  # the other threads stop after the fit they are in
            raise
    metrics, choices, pictures = model_side()
    worker_side()
    loso = [v for k, v in metrics.items() if k.startswith("val/loso_") and k.endswith("_object_accuracy")]
    if loso:
        metrics["val/loso_mean_object_accuracy"] = float(np.mean(loso))
        if "val/probe_object_accuracy" in metrics:  # the roadmap's LoSO drop (in points)
            metrics["val/loso_drop_points"] = 100 * (metrics["val/probe_object_accuracy"] - float(np.mean(loso)))
    metrics.update(recon)
    with timer.phase("control majority"):
        control_values, control_choices, control_preds = control_results(fitted_controls, tasks, pcfg)
    with timer.phase("verdicts"):
        controls = {**controls_for(metrics, control_values, tasks, preds, control_preds, pooled["object"],
                                   pcfg.ece_bins), **reconstruction_controls(feats["val"])}
    (out / "probe_choices.json").write_text(json.dumps({"model": choices, **control_choices}, indent=1))

    rows = []
    if robust:
        with timer.phase("robustness"):
            rows = robustness(feats, perturbations, encoded, tasks, pcfg, fitted)
            pictures += [plots.robustness_plot(rows, metric, out) for metric in ROBUSTNESS_PLOTS
                         if len(rows) > 1 and all(metric in r for r in rows)]  # (no perturbation: nothing to draw)
    for r in rows[1:]:
        for k, v in r.items():
            if k.startswith("drop:"):
                metrics[f"robust/{r['perturbation']}_{r['strength']:g}/{k[5:]}_drop"] = v
    (out / RunDir.EVAL_METRICS).write_text(json.dumps({**metrics, "controls": controls, "not_run": not_run},
                                                      indent=1, sort_keys=True))
    (out / "robustness.json").write_text(json.dumps(rows, indent=1))
    with timer.phase("report"):
        write_report(out, metrics, groups, rows, pictures, datamodule.record, controls, not_run)
    total = timer.elapsed()
    (out / RunDir.EVAL_TIMINGS).write_text(json.dumps({**timer.seconds, "total": total}, indent=1))
    hits = [name for name in control_x if cache and name in cache.hits]
    cached = f" (controls read from the probe cache: {', '.join(hits)})" if hits else ""
    with (out / "report.md").open("a") as fh:
        fh.write(f"\nTime per phase: {timer.line(total)}{cached}\n")
    return metrics


def missing_probes(tasks: list[Task], targets: dict, pooled: dict) -> list[str]:
    """One line per probe this data set cannot support, saying why (the report says so at the top)."""
    names, why = {t.name for t in tasks}, []
    if "object" not in names:
        why.append("object (held-out sequences): no object has two or more sequences")
    if "sensor" not in names:
        why.append("sensor and leave-one-sensor-out: the train split shows fewer than two sensors")
    why += [f"{name}: no fold of objects has both fitting and tested clips with two classes to fit"
            for name in targets if name not in names]
    return why


def _examples(model, val_ds, val: dict, cfg: EvalConfig) -> list[tuple[str, dict, list[str], str]]:
    """The worst and the typical (median objective) validation clips, with the model's outputs on them:
    (title, outputs, captions, file name) per panel."""
    order = np.argsort(_objective(val))
    n = min(cfg.examples, len(order))
    mid = len(order) // 2
    panels = []
    for title, picked, name in (("Worst validation clips", order[::-1][:n], "examples_worst.png"),
                                ("Typical validation clips (median objective)", order[max(0, mid - n // 2):][:n],
                                 "examples_typical.png")):
        ex = example_outputs(model, val_ds, [int(val["index"][i]) for i in picked], cfg.mask_ratio, cfg.device)
        captions = [f"{val['folder'][i]}\nt={val['t'][i]} obj={_objective(val)[i]:.3f}" for i in picked]
        panels.append((title, ex, captions, name))
    return panels


def _pictures(model, examples: list, curves: dict, groups: dict, recon: dict, pcfg: ProbeConfig, out: Path
              ) -> list[Path]:
    """Confusion, PR/ROC and reliability per probe; losses per object, sensor and frame; example clips."""
    pictures = []
    for task, curve in progress(curves.items(), len(curves), "pictures"):
        pictures += [plots.confusion(curve, task, out), plots.pr_roc(curve, task, out),
                     plots.reliability(curve, task, out, pcfg.ece_bins)]
    pictures.append(plots.group_bars(groups["object_name"], "Validation losses per object", "losses_by_object.png",
                                     out))
    pictures.append(plots.group_bars(groups["sensor_name"], "Validation losses per sensor", "losses_by_sensor.png",
                                     out))
    pictures.append(plots.frame_bars([recon[f"val/recon_frame{i}"] for i in range(1, 5)],
                                     recon["val/recon_copy_frame3"], out))
    for title, ex, captions, name in examples:
        pictures.append(plots.example_panel(model, ex, captions, title, name, out))
    return pictures


RECON_BASELINES = {  # per term, its baselines on the same patches (per-clip errors of features.per_clip_errors)
    "static": {"mean_frame": "mean_static"},
    "recon": {"mean_frame": "mean_recon"},
    "pred": {"copy_own_frame3": "copy_own_frame3", "copy_visible_frame3": "copy_visible_frame3",
             "copy_all_frame3": "copy_frame3", "mean_frame": "mean_pred"},
}


def reconstruction_controls(val: dict) -> dict[str, dict]:
    """Each reconstruction term beside its baselines on the same validation clips (lower is better): the baseline's
    value, the paired per-object difference (model − baseline) with its interval and verdict, and the fraction of
    clips on which the model's error is lower."""
    out = {}
    for term, baselines in RECON_BASELINES.items():
        mine = _object_means(val[term], val["object"])
        row = {name: {"value": float(val[key].mean()),
                      "model_wins_fraction": float((val[term] < val[key]).mean()),
                      **paired(mine, _object_means(val[key], val["object"]), "mse", len(val[term]))}
               for name, key in baselines.items()}
        row["better_than_all"] = all(c["verdict"] == "better" for c in row.values())
        out[f"val/recon_{term}"] = row
    return out


def _object_means(values: np.ndarray, objects: np.ndarray) -> dict[str, float]:
    return {str(o): float(values[objects == o].mean()) for o in np.unique(objects)}
