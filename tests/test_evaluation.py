"""Evaluation: probes beat chance, metrics agree with a direct computation, every picture is a PNG, the
robustness table is complete, and the test split is never read."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from physiotouch.evaluate import evaluate_checkpoint
from physiotouch.evaluation.probes import classification_metrics
from physiotouch.evaluation.robustness import make_perturbation
from physiotouch.hydra_setup import compose_config

PNG = b"\x89PNG\r\n\x1a\n"
QUICK = ["eval.probe.gap=1", "eval.examples=2", "eval.robustness.strengths.center_crop=[0.8]",
         "eval.robustness.strengths.random_crop=[0.8]", "eval.robustness.strengths.scale=[0.8]",
         "eval.robustness.strengths.noise=[0.05]", "eval.robustness.strengths.brightness=[0.8,1.2]"]


def best_ckpt(run: Path) -> Path:
    return next((run / "checkpoints").glob("best-*.ckpt"))


def _eval(run: Path, out: Path, *extra: str) -> dict:
    cfg = compose_config([f"ckpt_path={best_ckpt(run)}", f"out_dir={out}", f"paths.output_dir={out}", *QUICK, *extra],
                         config_name="evaluate")
    return evaluate_checkpoint(cfg)


def test_metrics_against_a_hand_computed_case():
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array([[.8, .1, .1], [.4, .5, .1], [.2, .7, .1], [.1, .8, .1], [.1, .2, .7], [.3, .3, .4]])
    m = classification_metrics(proba, y, 3, ece_bins=10)
    pred = proba.argmax(1)  # [0, 1, 1, 1, 2, 2]
    assert m["accuracy"] == pytest.approx(5 / 6)
    f1 = []
    for c in range(3):
        tp, fp, fn = ((pred == c) & (y == c)).sum(), ((pred == c) & (y != c)).sum(), ((pred != c) & (y == c)).sum()
        f1.append(2 * tp / (2 * tp + fp + fn))
    assert m["macro_f1"] == pytest.approx(np.mean(f1)) and m["micro_f1"] == pytest.approx(5 / 6)
    conf, hit = proba.max(1), pred == y  # ECE, 10 equal-width bins
    ece = sum(abs(conf[(conf > lo) & (conf <= lo + .1)].mean() - hit[(conf > lo) & (conf <= lo + .1)].mean())
              * ((conf > lo) & (conf <= lo + .1)).sum() / 6 for lo in np.arange(0, 1, .1)
              if ((conf > lo) & (conf <= lo + .1)).any())
    assert m["ece"] == pytest.approx(ece, abs=1e-6)
    from sklearn.metrics import roc_auc_score

    assert m["macro_auroc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"), abs=1e-6)


def test_perturbations_keep_shape_range_and_the_clip_identical_across_frames():
    clip = torch.rand(2, 1, 3, 28, 28).expand(-1, 4, -1, -1, -1).contiguous()
    ids = torch.tensor([1, 2])
    for kind, s in (("center_crop", .8), ("random_crop", .7), ("scale", .8), ("noise", .05), ("brightness", 1.3)):
        out = make_perturbation(kind, s)(clip, ids)
        assert out.shape == clip.shape and out.min() >= 0 and out.max() <= 1
        if kind != "noise":
            assert torch.allclose(out, out[:, :1].expand_as(out), atol=1e-6), kind
        assert torch.equal(out, make_perturbation(kind, s)(clip, ids))  # seeded by the clip


@pytest.mark.slow
def test_evaluation_end_to_end_with_an_unreadable_test_split(trained_run, tmp_path):
    splits = json.loads((trained_run / "splits.json").read_text())
    root = Path(splits["root"])
    data = tmp_path / "data"  # a copy of the data whose test frames are all garbage
    shutil.copytree(root, data)
    for folder in splits["sequences"]["test"]:
        for f in (data / folder).glob("*.png"):
            f.write_bytes(b"unreadable")
    out = tmp_path / "eval"
    m = _eval(trained_run, out, "use_run_data=false", f"data.root={data}", "data.synthetic=null",
              f"data.cache_dir={tmp_path}/cache", "data.split.val_fraction=0.2", "data.split.test_fraction=0.2",
              "data.split.exclude=[cylinder,ring,ridged,sphere]")  # the run's split (tests/conftest.py)
    assert m["val/probe_sensor_accuracy"] > m["val/probe_sensor_chance"] + 0.2
    assert max(m["val/probe_object_accuracy"], m["val/probe_object_knn_accuracy"]) > m["val/probe_object_chance"]
    assert 0.0 <= m["val/pred_beats_copy_fraction"] <= 1.0
    # the same masks, model and clips as training's validation at the best epoch: the same objective
    history = json.loads((trained_run / "history.json").read_text())
    best = min(r["val/objective"] for r in history if r["epoch"] >= 0)
    assert m["val/recon_objective"] == pytest.approx(best, rel=1e-5)
    written = json.loads((out / "metrics.json").read_text())
    assert isinstance(written.pop("controls"), dict)  # issue 11: each probe's controls, under "controls"
    assert isinstance(written.pop("not_run"), list)  # issue 20: the probes this data set cannot support, and why
    assert all(isinstance(v, float) for v in written.values())
    pictures = sorted(out.glob("*.png"))
    assert len(pictures) >= 14
    index = (out / "index.md").read_text()
    for png in pictures:
        assert png.read_bytes()[:8] == PNG and png.name in index
    rows = json.loads((out / "robustness.json").read_text())
    assert [(r["perturbation"], r["strength"]) for r in rows] == [
        ("clean", 0.0), ("center_crop", .8), ("random_crop", .8), ("scale", .8), ("noise", .05),
        ("brightness", .8), ("brightness", 1.2)]
    assert all("drop:val/probe_sensor_accuracy" in r for r in rows[1:])
    assert (out / "csv" / "metrics.csv").is_file()  # the same numbers, to the loggers
    # issue 24: each phase's seconds in timings.json, and the report's last line says them
    timings = json.loads((out / "timings.json").read_text())
    phases = {"encode", "encode controls", "probes model", "plots", "robustness", "verdicts", "report",
              "control majority",
              *(f"control {name}" for name in ("raw_pixels", "pixel_change", "untrained", "contact_features"))}
    assert set(timings) == phases | {"total"} and all(v >= 0 for v in timings.values())
    # the probes and pictures ran beside the encodings (utils/threads.py): the total is the wall clock, not the sum
    assert timings["total"] <= sum(v for k, v in timings.items() if k != "total") + 1.0
    last = (out / "report.md").read_text().strip().splitlines()[-1]
    assert last.startswith("Time per phase: encode ") and "probes model" in last and " total " in last


@pytest.mark.slow
def test_evaluate_cli_writes_beside_the_run_and_the_report_gains_probe_columns(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    best = best_ckpt(run)
    cmd = [sys.executable, "-m", "physiotouch.evaluate", f"ckpt_path={best}", "eval.robustness.enabled=false", *QUICK]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (run / "eval" / "metrics.json").is_file() and "Probes on frozen features" in res.stdout
    rep = subprocess.run([sys.executable, "-m", "physiotouch.report", str(run), "--out", str(tmp_path / "rep")],
                         capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "val/probe_object_accuracy" in report  # each linear probe's headline number, one column each
    assert "## Against the controls, across replicates" in report and "contact_features" in report
    versus = json.loads((tmp_path / "rep" / "against_controls.json").read_text())
    assert versus and all(r["verdict"] == "insufficient data" for r in versus)  # one run: one replicate


@pytest.mark.slow
def test_evaluate_refuses_a_missing_checkpoint(tmp_path):
    res = subprocess.run([sys.executable, "-m", "physiotouch.evaluate", f"ckpt_path={tmp_path}/none.ckpt"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "none.ckpt" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_a_probe_metric_can_be_the_sweep_objective(small_data, tmp_path, make_cfg):
    from physiotouch.training.run import run_training

    result = run_training(make_cfg(small_data, tmp_path, "trainer.max_epochs=1", "evaluate_after_training=true",
                                   "optimized_metric=val/probe_sensor_macro_f1", "optimized_metric_mode=max",
                                   "eval.robustness.enabled=false", "eval.examples=1", "eval.probe.gap=0"))
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["metric"] == metrics["val/probe_sensor_macro_f1"]


@pytest.mark.slow
def test_every_probe_and_reconstruction_number_has_its_controls(trained_run, tmp_path):
    import json

    import numpy as np

    from physiotouch.checkpoints.format import load_model
    from physiotouch.data import build_datamodule
    from physiotouch.evaluation.controls import CONTROLS
    from physiotouch.evaluation.run import EvalConfig, run_evaluation
    from physiotouch.evaluation.verdicts import VERDICTS
    from physiotouch.run_folder import read_yaml

    cfg = read_yaml(trained_run / "config_resolved.yaml")
    model, _ = load_model(trained_run / "checkpoints" / "last.ckpt")
    datamodule = build_datamodule(cfg["data"])
    datamodule.setup()
    metrics = run_evaluation(model, datamodule, EvalConfig(robustness={"enabled": False}), tmp_path)
    controls = json.loads((tmp_path / "metrics.json").read_text())["controls"]
    for key in ("val/probe_sensor_accuracy", "val/probe_sensor_macro_f1", "val/probe_sensor_knn_accuracy"):
        assert set(controls[key]) == {*CONTROLS, "better_than_all"}
        for c in CONTROLS:  # each control: its value, the paired per-object difference, its interval, a verdict
            row = controls[key][c]
            assert isinstance(row["value"], float) and row["verdict"] in VERDICTS
            assert {"diff", "diff_ci95", "objects", "clips"} <= set(row)
            if row["objects"] < 5:  # the validation split's few objects: never a verdict
                assert row["verdict"] == "insufficient data" and row["diff_ci95"] is None
    # the majority control, recomputed here from the split's labels: train's commonest sensor, scored on val
    train_sensors = [datamodule.labels["sensor"][s.sensor] for s in datamodule.datasets["train"].sequences
                     for _ in range(s.num_windows)]
    val_sensors = np.array([datamodule.labels["sensor"][s.sensor] for s in datamodule.datasets["val"].sequences
                            for _ in range(s.num_windows)])
    expected = float((val_sensors == np.bincount(train_sensors).argmax()).mean())
    assert controls["val/probe_sensor_accuracy"]["majority"]["value"] == pytest.approx(expected)
    # reconstruction beside its baselines on the same patches: frame 4's input-matched copies among them
    assert controls["val/recon_pred"]["copy_all_frame3"]["value"] == pytest.approx(metrics["val/recon_copy_frame3"])
    for name in ("copy_own_frame3", "copy_visible_frame3"):
        row = controls["val/recon_pred"][name]
        assert row["value"] == pytest.approx(metrics[f"val/recon_{name}"])
        assert row["model_wins_fraction"] == pytest.approx(metrics[f"val/pred_beats_{name}_fraction"])
    assert {"mean_frame", "better_than_all"} <= set(controls["val/recon_static"])
    report = (tmp_path / "report.md").read_text()
    assert "## Controls" in report and "| val/probe_sensor_accuracy |" in report
    # issue 11: no probe is fit and tested on the same sequence (only the named re-identification diagnostic is)
    splits = json.loads((tmp_path / "probe_splits.json").read_text())
    assert {"val/probe_sensor", "val/probe_object"} <= set(splits)
    for name, probe in splits.items():
        for fold in probe["folds"]:
            assert fold["fit"] and fold["test"], name
            assert probe["diagnostic"] or not set(fold["fit"]) & set(fold["test"]), name
    assert all(probe["diagnostic"] == ("/diagnostic_" in name) for name, probe in splits.items())
    assert not any("diagnostic" in key for key in controls)  # a diagnostic is not a representation number


def test_perturbations_as_matrices_equal_resampling_and_share_draws_across_strengths():
    """Crops and zooms are applied as matrix products: the same values as resampling each clip (F.interpolate,
    antialiased) within 1e-6; noise is one draw per clip whatever the strength, the batch or the frames given."""
    import torch.nn.functional as F

    from physiotouch.evaluation.robustness import _generator

    def resize(x, size):
        b, t, c, h, w = x.shape
        return F.interpolate(x.reshape(b * t, c, h, w), size=(size, size), mode="bilinear", align_corners=False,
                             antialias=True).reshape(b, t, c, size, size)

    clips, ids = torch.rand(3, 4, 3, 28, 28), torch.tensor([5, 17, 99])
    for kind, s in (("center_crop", .7), ("random_crop", .8), ("scale", .8)):
        side = max(2, round(28 * s))
        if kind == "scale":
            pad = 28 - side
            ref = F.pad(resize(clips, side).reshape(12, 3, side, side),
                        (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), mode="replicate").reshape(clips.shape)
        else:
            crops = []
            for clip, cid in zip(clips, ids.tolist()):
                top = left = (28 - side) // 2
                if kind == "random_crop":
                    top, left = (int(v) for v in torch.randint(0, 28 - side + 1, (2,), generator=_generator(cid)))
                crops.append(clip[..., top:top + side, left:left + side])
            ref = resize(torch.stack(crops), 28)
        assert (make_perturbation(kind, s)(clips, ids) - ref).abs().max() < 1e-6, kind
    shared: dict = {}
    low, high = make_perturbation("noise", .02)(clips, ids, shared), make_perturbation("noise", .1)(clips, ids, shared)
    assert torch.equal(low, make_perturbation("noise", .02)(clips, ids))
    assert torch.equal(high, make_perturbation("noise", .1)(clips, ids))
    noise = make_perturbation("noise", .05)
    assert torch.equal(noise(clips[:, :3], ids), noise(clips, ids)[:, :3])


def test_evaluate_scores_with_the_runs_own_validation_masks(trained_run, tmp_path, monkeypatch):
    """One source for the validation mask ratio: a run's checkpoint is evaluated with the ratio the run validated
    with (its config_resolved.yaml), not the evaluate config's default."""
    import yaml

    import physiotouch.evaluate as command
    import physiotouch.evaluation.run as evaluation
    from physiotouch.hydra_setup import compose_config

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    cfg_file = run / "config_resolved.yaml"
    saved = yaml.safe_load(cfg_file.read_text())
    saved["validation"]["mask_ratio"] = 0.6
    cfg_file.write_text(yaml.safe_dump(saved))
    seen = {}
    monkeypatch.setattr(evaluation, "run_evaluation", lambda model, dm, settings, out, worker: seen.update(
        ratio=settings.mask_ratio) or (out.mkdir(parents=True, exist_ok=True), (out / "report.md").write_text(
            "# r\n\n## Pictures\n"), {})[-1])
    cfg = compose_config([f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"out_dir={tmp_path / 'eval'}",
                          f"paths.output_dir={tmp_path}", "logger=none"], config_name="evaluate")
    assert cfg.eval.mask_ratio == 0.75
    command.evaluate_checkpoint(cfg)
    assert seen["ratio"] == 0.6


@pytest.mark.slow
def test_real_data_without_labels_says_what_it_cannot_run_and_gives_no_verdict(trained_run, tmp_path):
    """Issue 20: a real set like the GelSight one (no labels.csv, no trajectory.csv, one sequence per object and
    sensor, a handful of clips): the evaluation runs, names each probe it could not run and why, and gives
    `insufficient data` rather than a verdict."""
    import shutil

    from physiotouch.checkpoints.format import load_model
    from physiotouch.data import build_datamodule
    from physiotouch.evaluation.run import EvalConfig, run_evaluation
    from physiotouch.run_folder import read_yaml

    cfg = read_yaml(trained_run / "config_resolved.yaml")
    data = tmp_path / "real"
    shutil.copytree(cfg["data"]["root"], data, ignore=shutil.ignore_patterns("labels.csv", "trajectory.csv"))
    rows = (data / "index.csv").read_text().splitlines()
    (data / "index.csv").write_text("\n".join(r for r in rows if "_gelsight" in r) + "\n")  # one sensor, as GelSight
    model, _ = load_model(trained_run / "checkpoints" / "last.ckpt")
    datamodule = build_datamodule({**cfg["data"], "root": str(data), "index": str(data / "index.csv"),
                                   "synthetic": None, "cache_dir": str(tmp_path / "cache")})
    datamodule.setup()
    run_evaluation(model, datamodule, EvalConfig(robustness={"enabled": False}, examples=1), tmp_path / "eval")
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    reasons = " | ".join(saved["not_run"])
    for why in ("no labels.csv", "no trajectory.csv", "object (held-out sequences): no object has two",
                "sensor and leave-one-sensor-out: the train split shows fewer than two sensors"):
        assert why in reasons, reasons
    verdicts = [c["verdict"] for row in saved["controls"].values() for k, c in row.items() if k != "better_than_all"]
    assert verdicts and set(verdicts) == {"insufficient data"}
    report = (tmp_path / "eval" / "report.md").read_text()
    assert report.index("Probes that could not run here") < report.index("## Probes on frozen features")


@pytest.mark.slow
def test_probes_and_pictures_beside_the_encodings_give_the_serial_results(trained_run, tmp_path):
    """The evaluation fits the model's probes and draws its pictures in a second thread while it encodes
    (utils/threads.py); with one thread to share it runs them one after the other. Both give the same numbers (the
    probes run on one torch thread either way; the encodings' sums may differ in the last float bits with the
    thread count), the same choices and the same verdicts."""
    before = torch.get_num_threads()
    results = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = tmp_path / f"threads{threads}"
            _eval(trained_run, out, "eval.probe_cache=false")
            results[threads] = {name: json.loads((out / name).read_text())
                                for name in ("metrics.json", "probe_choices.json", "robustness.json")}
    finally:
        torch.set_num_threads(before)
    serial, beside = (results[n]["metrics.json"] for n in (1, 2))
    assert serial.keys() == beside.keys()
    for key, value in serial.items():
        if isinstance(value, float):
            assert beside[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    verdicts = {n: {key: {name: c["verdict"] for name, c in row.items() if isinstance(c, dict)}
                    for key, row in results[n]["metrics.json"]["controls"].items()} for n in (1, 2)}
    assert verdicts[1] == verdicts[2]
    assert results[1]["probe_choices.json"] == results[2]["probe_choices.json"]
    assert len(results[1]["robustness.json"]) == len(results[2]["robustness.json"])
