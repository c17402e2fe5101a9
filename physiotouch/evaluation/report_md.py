"""The evaluation's `report.md` and `index.md`: probes, their controls with verdicts over objects, reconstruction,
robustness and pictures, from the numbers `evaluation/run.py` computed (nothing is computed here)."""

from __future__ import annotations

from pathlib import Path

from physiotouch.utils.markdown import inert, table

from .controls import CONTROLS
from .features import ERRORS
from .verdicts import MIN_CLIPS, MIN_OBJECTS

SHORT = {"better": "**better**", "worse": "worse", "no detectable difference": "no diff.",
         "insufficient data": "insufficient data"}


def comparison_cell(c: dict | None) -> str:
    """One control's cell: its value, the paired difference with its interval, and the verdict."""
    if c is None:
        return "-"
    value = "-" if c.get("value") is None else f"{c['value']:.4f}"
    if c["diff_ci95"] is None:
        return f"{value}; {SHORT[c['verdict']]} ({c['objects']} objects)"
    lo, hi = c["diff_ci95"]
    return f"{value}; Δ {c['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}] {SHORT[c['verdict']]}"


def controls_section(m: dict, controls: dict) -> list[str]:
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    shown = [k for k in controls if k.startswith(("val/probe_", "val/loso_")) and
             k.endswith(("_accuracy", "_macro_f1", "_r2", "_mae"))]
    lines = ["## Controls: is each number better than them, across objects?", "",
             "The same probe, tuned the same way, fitted and tested on the same clips, on: raw pixels (the encoder's "
             "frames 1-3, each pooled to 8×8), their change between frames (motion energy), an untrained network of "
             "the same architecture, hand-made contact features (background removed per sensor; the ceiling "
             "control), and the majority class (the mean, for a regression). Each cell: the control's value; Δ = "
             "model − control, the mean over tested objects of the per-object difference (the object is the unit "
             "of replication), with its 95% t-interval; the verdict is **better** only when the whole interval is "
             "on the good side of zero (below zero for ECE and MAE), worse when it is wholly on the other side, no "
             f"diff. otherwise, and insufficient data under {MIN_OBJECTS} objects or {MIN_CLIPS} clips. Never "
             "better on a point estimate.", "",
             *table(["metric", "model", *[c.replace("_", " ") for c in CONTROLS], "better than all"], [
                 [k, f(m[k]), *[comparison_cell(controls[k].get(c)) for c in CONTROLS],
                  "yes" if controls[k]["better_than_all"] else "**no**"] for k in shown])]
    recon = [k for k in ("val/recon_static", "val/recon_recon", "val/recon_pred") if k in controls]
    names = sorted({c for k in recon for c in controls[k] if c != "better_than_all"})
    lines += ["", *table(["reconstruction (validation, lower is better)", "model", *names, "better than all"], [
        [k, f(m[k]), *[comparison_cell(controls[k].get(c)) for c in names],
         "yes" if controls[k]["better_than_all"] else "**no**"] for k in recon])]
    pred = controls.get("val/recon_pred", {})
    wins = ", ".join(f"{name.replace('_', ' ')} on {100 * c['model_wins_fraction']:.1f}%" for name, c in pred.items()
                     if isinstance(c, dict))
    lines += ["", f"Frame-4 prediction beats {wins} of validation clips. Input-matched copies see only what the model "
              "sees: its own reconstruction of frame 3 (copy own frame3) and the visible frame-3 patches, each "
              "masked one guessed as their mean (copy visible frame3); copy all frame3 uses all 16 patches, more "
              "than the model sees. Frames 1-3 are masked as tubes, so no visible frame exists to copy there; the "
              "mean-frame baseline guesses each removed patch as the mean visible patch of its frame.", ""]
    return lines


def write_report(out: Path, m: dict, groups: dict, rows: list[dict], pictures: list[Path], record: dict,
                 controls: dict, not_run: list[str]) -> None:
    f = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["# Evaluation", "", f"Data version `{inert(record['data_version'])}`; train and validation splits only.",
             ""]
    if not_run:
        lines += ["**Probes that could not run here:**", "", *[f"- {inert(why)}" for why in not_run], ""]
    lines += ["## Probes on frozen features", "",
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
    lines += ["", *controls_section(m, controls), "## Reconstruction on the validation split (fixed masks)", "",
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
