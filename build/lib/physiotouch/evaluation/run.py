"""Evaluation of a trained encoder on the train and validation splits: probes, stratified reconstruction,
robustness to input perturbations, pictures. Writes `metrics.json` (flat), `report.md`, `index.md` and PNGs.
The test split is not touched (the release command evaluates it, once)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from physiotouch.run_folder import RunDir
from physiotouch.utils.markdown import table
from physiotouch.utils.timing import PhaseTimer

from . import plots
from .controls import CONTROLS, control_metrics, controls_for
from .encoder import encode, encode_each
from .features import example_outputs
from .probes import Task, build_tasks, headline_metrics, pool, probe_splits, run_probes
from .robustness import DEFAULT_STRENGTHS, make_perturbation
from .settings import EvalConfig, ProbeConfig

log = logging.getLogger(__name__)
ERRORS = ("static", "recon", "pred", "copy_frame3")


def _objective(f: dict) -> np.ndarray:
    return f["objective"]  # per clip, by the model's own definition (TactileVideoMAE.objective)


def reconstruction_metrics(val: dict) -> tuple[dict[str, float], dict]:
    """Validation losses overall, per object, per sensor, per frame position; the copy-shortcut comparison."""
    m = {f"val/recon_{k}": float(val[k].mean()) for k in ERRORS}
    m["val/recon_objective"] = float(_objective(val).mean())
    for i in range(1, 5):
        m[f"val/recon_frame{i}"] = float(val[f"frame{i}"].mean())
    m["val/pred_beats_copy_fraction"] = float((val["pred"] < val["copy_frame3"]).mean())
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


def robustness(model, datasets: dict, clean: dict, tasks: list[Task], cfg: EvalConfig, pcfg: ProbeConfig,
               fitted: dict) -> list[dict]:
    """The model's linear probes, fit once on the clean features (`fitted`, by probe key), tested on each
    perturbation's features (each split read once and encoded under every (perturbation, strength); validation with
    its errors)."""
    x_clean = pool(clean)["x"]
    rows = [{"perturbation": "clean", "strength": 0.0, **_robust_metrics(clean, x_clean, tasks, pcfg, fitted)}]
    perturbations = [make_perturbation(kind, float(strength))
                     for kind, strengths in cfg.robustness.get("strengths", DEFAULT_STRENGTHS).items()
                     for strength in strengths]
    encoded = {s: encode_each(model, datasets[s], cfg.batch_size, cfg.mask_ratio, perturbations, errors=s == "val",
                              device=cfg.device, limit=cfg.max_clips, name=s) for s in ("train", "val")}
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


def evaluation_labels(datamodule, folders) -> dict[str, dict]:
    """labels.csv beside the index (per-sequence attributes) for these folders, if the data set has one."""
    from physiotouch.data.labels import read_labels

    return read_labels(datamodule.index, sorted(set(folders)))[0]


def run_evaluation(model, datamodule, cfg: EvalConfig, out: Path) -> dict[str, float]:
    out.mkdir(parents=True, exist_ok=True)
    timer = PhaseTimer()
    datasets = datamodule.datasets  # train and val only: the data module never builds the test split
    vocab = {k: v for k, v in datamodule.record["labels"].items()}
    pcfg = ProbeConfig(**cfg.probe)
    # Reconstruction errors are reported on validation only; the training split gives the probes their features.
    with timer.phase("encode"):
        feats = {s: encode(model, datasets[s], cfg.batch_size, cfg.mask_ratio, errors=s == "val", device=cfg.device,
                           limit=cfg.max_clips, name=s) for s in ("train", "val")}
    pooled = pool(feats)
    tasks = build_tasks(pooled, vocab, evaluation_labels(datamodule, pooled["folder"]), pcfg)
    (out / "probe_splits.json").write_text(json.dumps(probe_splits(tasks, pooled["folder"]), indent=1))
    fitted: dict = {}
    with timer.phase("probes model"):
        metrics, curves, choices = run_probes(tasks, pooled["x"], pcfg, fitted_linear=fitted)
    loso = [v for k, v in metrics.items() if k.startswith("val/loso_") and k.endswith("_object_accuracy")]
    if loso:
        metrics["val/loso_mean_object_accuracy"] = float(np.mean(loso))
        if "val/probe_object_accuracy" in metrics:  # the roadmap's LoSO drop (in points)
            metrics["val/loso_drop_points"] = 100 * (metrics["val/probe_object_accuracy"] - float(np.mean(loso)))
    recon, groups = reconstruction_metrics(feats["val"])
    metrics.update(recon)
    control_values, control_choices = control_metrics(model, datasets, tasks, pcfg, cfg.batch_size, cfg.device,
                                                      cfg.max_clips, datamodule.seed, timer)
    controls = {**controls_for(metrics, control_values), **reconstruction_controls(metrics)}
    (out / "probe_choices.json").write_text(json.dumps({"model": choices, **control_choices}, indent=1))

    with timer.phase("plots"):
        pictures = _pictures(model, datasets, feats, curves, groups, metrics, cfg, pcfg, out)

    rows = []
    if cfg.robustness.get("enabled", True):
        with timer.phase("robustness"):
            rows = robustness(model, datasets, feats, tasks, cfg, pcfg, fitted)
        for metric in ("val/recon_objective", "val/probe_object_accuracy", "val/probe_sensor_accuracy",
                       "val/probe_motion_accuracy", "val/probe_peak_depth_r2"):
            if all(metric in r for r in rows):
                pictures.append(plots.robustness_plot(rows, metric, out))
        for r in rows[1:]:
            for k, v in r.items():
                if k.startswith("drop:"):
                    metrics[f"robust/{r['perturbation']}_{r['strength']:g}/{k[5:]}_drop"] = v
    (out / RunDir.EVAL_METRICS).write_text(json.dumps({**metrics, "controls": controls}, indent=1, sort_keys=True))
    (out / "robustness.json").write_text(json.dumps(rows, indent=1))
    with timer.phase("report"):
        _write_report(out, metrics, groups, rows, pictures, datamodule.record, controls)
    (out / RunDir.EVAL_TIMINGS).write_text(json.dumps({**timer.seconds, "total": sum(timer.seconds.values())},
                                                      indent=1))
    with (out / "report.md").open("a") as fh:
        fh.write(f"\nTime per phase: {timer.line()}\n")
    return metrics


def _pictures(model, datasets: dict, feats: dict, curves: dict, groups: dict, metrics: dict, cfg: EvalConfig,
              pcfg: ProbeConfig, out: Path) -> list[Path]:
    """Confusion, PR/ROC and reliability per probe; losses per object, sensor and frame; example clips."""
    pictures = []
    for task, curve in curves.items():
        pictures += [plots.confusion(curve, task, out), *plots.pr_roc(curve, task, out),
                     plots.reliability(curve, task, out, pcfg.ece_bins)]
    pictures.append(plots.group_bars(groups["object_name"], "Validation losses per object", "losses_by_object.png",
                                     out))
    pictures.append(plots.group_bars(groups["sensor_name"], "Validation losses per sensor", "losses_by_sensor.png",
                                     out))
    pictures.append(plots.frame_bars([metrics[f"val/recon_frame{i}"] for i in range(1, 5)],
                                     metrics["val/recon_copy_frame3"], out))
    val = feats["val"]
    order = np.argsort(_objective(val))
    n = min(cfg.examples, len(order))
    mid = len(order) // 2
    for title, picked, name in (("Worst validation clips", order[::-1][:n], "examples_worst.png"),
                                ("Typical validation clips (median objective)", order[max(0, mid - n // 2):][:n],
                                 "examples_typical.png")):
        ex = example_outputs(model, datasets["val"], [int(val["index"][i]) for i in picked], cfg.mask_ratio,
                             cfg.device)
        captions = [f"{val['folder'][i]}\nt={val['t'][i]} obj={_objective(val)[i]:.3f}" for i in picked]
        pictures.append(plots.example_panel(model, ex, captions, title, name, out))
    return pictures


def reconstruction_controls(m: dict[str, float]) -> dict[str, dict]:
    """Each reconstruction term beside its baselines on the same patches (lower is better)."""
    out = {}
    for term, baselines in (("static", {"mean_frame": "val/recon_static_mean_frame"}),
                            ("recon", {"mean_frame": "val/recon_recon_mean_frame"}),
                            ("pred", {"copy_last_visible_frame": "val/recon_copy_frame3",
                                      "mean_frame": "val/recon_pred_mean_frame"})):
        row = {name: m[key] for name, key in baselines.items()}
        row["beats_controls"] = all(m[f"val/recon_{term}"] < v for v in row.values())
        out[f"val/recon_{term}"] = row
    return out


def _controls_section(m: dict, controls: dict) -> list[str]:
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    verdict = lambda c: "yes" if c["beats_controls"] else "**no**"  # noqa: E731
    shown = [k for k in controls if k.startswith(("val/probe_", "val/loso_")) and
             k.endswith(("_accuracy", "_macro_f1", "_macro_auroc", "_r2", "_mae"))]
    lines = ["## Controls: does each number beat them?", "",
             "The same probe, fitted and tested on the same clips, on raw pixels (each frame pooled to 8×8), on their "
             "change between frames (motion energy), on an untrained network of the same architecture, and the "
             "majority class (the mean, for a regression; MAE is "
             "lower-is-better). **no** marks a number that does "
             "not beat all of its controls: it says nothing about the representation.", "",
             *table(["metric", "model", "raw pixels", "pixel change", "untrained", "majority", "beats all"], [
                 [k, f(m[k]), *[f(controls[k][c]) for c in CONTROLS], verdict(controls[k])] for k in shown]),
             "", *table(["reconstruction (validation, lower is better)", "model", "copy last visible frame",
                         "mean frame", "beats all"], [
                 [k, f(m[k]), f(controls[k].get("copy_last_visible_frame")), f(controls[k]["mean_frame"]),
                  verdict(controls[k])] for k in ("val/recon_static", "val/recon_recon", "val/recon_pred")])]
    lines += ["", "Frames 1-3 are masked as tubes (a removed patch is removed in all three), so no visible frame "
              "exists to copy there; the mean-frame baseline guesses each removed patch as the mean visible patch "
              "of its frame, and frame 4 as the mean of frames 1-3.", ""]
    return lines


def _write_report(out: Path, m: dict, groups: dict, rows: list[dict], pictures: list[Path], record: dict,
                  controls: dict) -> None:
    f = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["# Evaluation", "", f"Data version `{record['data_version']}`; train and validation splits only.", "",
             "## Probes on frozen features", "",
             "No probe is tested on a sequence it was fit on (`probe_splits.json` lists the folders). Object: held-out "
             "sequences of every non-test object (folds of sequences). Sensor: fit on the train split's objects, "
             "tested on the validation split's. Attributes of `labels.csv`: the non-test objects in folds, each "
             "fold's objects tested by a probe fit on the other objects. LoSO: the object probe fit on all sensors "
             "but one, tested on the held-out sensor.", ""]
    probes = (("linear", "val/probe_{}_"), ("k-NN", "val/probe_{}_knn_"))
    tasks = sorted({k.split("/probe_")[1].rsplit("_", 1)[0] for k in m if k.startswith("val/probe_")
                    and k.endswith("_chance")})
    lines += table(["task", "probe", "accuracy", "macro F1", "micro F1", "macro AUROC", "macro AUPRC", "ECE", "chance"],
                   [[t, name, *[f(m.get(pre.format(t) + k, "-")) for k in ("accuracy", "macro_f1", "micro_f1",
                                                                          "macro_auroc", "macro_auprc", "ece")],
                     f(m[f"val/probe_{t}_chance"])] for t in tasks for name, pre in probes
                    if pre.format(t) + "accuracy" in m])
    regressions = sorted({k[len("val/probe_"):-len("_r2")] for k in m if k.startswith("val/probe_")
                          and k.endswith("_r2") and "_knn_" not in k})
    if regressions:
        lines += ["", *table(["attribute (regression)", "probe", "R²", "MAE"], [
            [t, name, f(m.get(pre.format(t) + "r2", "-")), f(m.get(pre.format(t) + "mae", "-"))]
            for t in regressions for name, pre in probes])]
    if "val/diagnostic_reid_object_accuracy" in m:
        lines += ["", f"Re-identification diagnostic (not a measure of the representation): an object probe fit on "
                      f"early and tested on late windows of the *same* sequences scores "
                      f"{f(m['val/diagnostic_reid_object_accuracy'])}; it tells which recording a clip comes from."]
    loso = sorted(k for k in m if k.startswith("val/loso_") and k.endswith("_object_accuracy") and "mean" not in k)
    if loso:
        lines += ["", *table(["held-out sensor", "object accuracy", "object macro F1"], [
            [k.split("_")[1], f(m[k]), f(m[k.replace("accuracy", "macro_f1")])] for k in loso])]
        lines.append(f"\nLoSO drop against the all-sensor object probe: {f(m.get('val/loso_drop_points', '-'))} "
                     f"points (roadmap target: at most 5).")
    lines += ["", *_controls_section(m, controls), "## Reconstruction on the validation split (fixed masks)", "",
              f"objective {f(m['val/recon_objective'])}; static {f(m['val/recon_static'])}, recon "
              f"{f(m['val/recon_recon'])}, pred {f(m['val/recon_pred'])}; frame 3 copied as frame 4: "
              f"{f(m['val/recon_copy_frame3'])}. Prediction beats the copy shortcut on "
              f"{100 * m['val/pred_beats_copy_fraction']:.1f}% of clips.", ""]
    for by, per_group in groups.items():
        lines += [*table([by.split("_")[0], "static", "recon", "pred", "copy frame 3", "pred beats copy"],
                         [[g, *[f(v[k]) for k in (*ERRORS, "beats_copy")]] for g, v in per_group.items()]), ""]
    if rows:
        keys = [k for k in rows[0] if k.startswith("val/")]
        lines += ["## Robustness (probes fit on clean features, tested on perturbed inputs)", "",
                  *table(["perturbation", "strength", *keys, *[f"drop {k.split('/')[-1]}" for k in keys]], [
                      [r["perturbation"], f"{r['strength']:g}", *[f(r.get(k, "-")) for k in keys],
                       *[f(r.get(f"drop:{k}", 0.0)) for k in keys]] for r in rows])]
        lines.append("\nA drop is clean minus perturbed: positive for accuracy means worse; negative for the "
                     "reconstruction objective means worse.")
    lines += ["", "## Pictures", "", *[f"- [{p.name}]({p.name})" for p in pictures]]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "index.md").write_text("# Evaluation pictures\n\n" + "\n".join(
        f"- `{p.name}`: ![{p.stem}]({p.name})" for p in pictures) + "\n")
