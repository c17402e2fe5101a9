"""Built-in data a representation can be tested on: several contact sequences per object with their attributes
(labels.csv), probes that never test on a sequence they were fit on, and controls for every attribute."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from physiotouch.data.synthetic import MOTIONS, ROTATION_SYMMETRIC, SynthConfig, generate
from physiotouch.data.trajectory import read_trajectory, window_targets
from physiotouch.evaluation.probes import ProbeConfig, build_tasks, pool, run_probes, sequence_folds

SEQ = dict(num_objects=6, frames=16, width=48, height=36, seed=4, sequences=3)


@pytest.fixture(scope="module")
def seq_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq") / "synth"
    generate(SynthConfig(out=str(root), **SEQ))
    return root


def test_generator_writes_several_sequences_per_object_with_their_attributes(seq_data):
    with (seq_data / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    index = [line.split(",")[0] for line in (seq_data / "index.csv").read_text().splitlines()]
    assert [r["folder"] for r in rows] == index and len(index) == 6 * 3 * 3
    per_object = Counter(r["shape"] for r in rows)
    assert set(per_object.values()) == {9}  # 3 sequences on each of 3 sensors
    for shape in per_object:  # every object is pressed, slid and rotated; a rotation-symmetric one is never rotated
        expected = set(MOTIONS) - ({"rotate"} if shape in ROTATION_SYMMETRIC else set())
        assert {r["motion"] for r in rows if r["shape"] == shape} == expected
    assert ROTATION_SYMMETRIC & set(per_object)  # the fixture holds one
    depths = [float(r["peak_depth"]) for r in rows]
    assert 0 < min(depths) < max(depths) <= 1.0 and len(set(depths)) > 0.9 * len(depths)  # each its own depth
    truth, problems = read_trajectory(seq_data / "index.csv", index)  # the per-frame truth of every sequence
    assert not problems and sorted(truth) == sorted(index)
    for r in rows:
        frames = truth[r["folder"]]
        assert frames.shape == (16, 4) and abs(frames[:, 3].max() - float(r["peak_depth"])) < 1e-3
        if r["motion"] != "rotate":
            assert np.ptp(frames[:, 2]) == 0  # the angle moves only when the object is rotated


def test_window_targets_describe_the_frames_the_encoder_sees():
    """Each window's targets come from frames t-3..t-1 (what the encoder sees), never from frame t or the sequence."""
    n = 12
    still = np.zeros((n, 4))
    still[:, 3] = 0.5
    assert window_targets(still, 5) == {"motion": "none", "depth": 0.5, "travel": 0.0, "rotation": 0.0}
    press = still.copy()
    press[:, 3] = np.linspace(0.2, 0.9, n)
    release, slide, turn, lift = press[::-1].copy(), still.copy(), still.copy(), still.copy()
    slide[:, 0] = np.linspace(0, 0.6, n)
    turn[:, 2] = np.linspace(0, 3.0, n)
    lift[:, 3] = 0.0
    lift[:, 0] = np.linspace(0, 0.6, n)  # moving, but not touching: nothing shows
    for traj, motion in ((press, "press"), (release, "release"), (slide, "slide"), (turn, "rotate"), (lift, "none")):
        assert window_targets(traj, 6)["motion"] == motion
    assert window_targets(press, 6)["depth"] == pytest.approx(press[3:6, 3].mean())
    assert window_targets(slide, 6)["travel"] == pytest.approx(2 * 0.6 / (n - 1))
    changed = press.copy()
    changed[6] = [9, 9, 9, 9]  # frame t itself: the model predicts it, the probe never sees it
    assert window_targets(changed, 6) == window_targets(press, 6)
    gap = press.copy()
    gap[4] = np.nan  # a frame without a row: no target
    assert window_targets(gap, 6) is None and window_targets(press, n + 1) is None


@pytest.mark.slow
def test_check_validates_labels_csv_and_trajectory_csv(seq_data, tmp_path):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(seq_data, data)
    first = (data / "index.csv").read_text().split(",")[0]
    with (data / "labels.csv").open("a") as fh:
        fh.write(f"data_nowhere_x_digit,press,0.5,sphere,smooth\n{first},slide,deep,sphere,smooth\n")
    with (data / "trajectory.csv").open("a") as fh:
        fh.write(f"data_nowhere_x_digit,0,0,0,0,0\n{first},0,0,0,0,0\n{first},99,0,nan,0,0\n{first},x,0,0,0,0\n")
    out = subprocess.run([sys.executable, "-m", "physiotouch.data", "check", "--root", str(data), "--index",
                          str(data / "index.csv")], capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode == 1
    assert "labels.csv" in text and "is not in the index" in text and "labelled twice" in text
    for why in ("listed twice", "x, y, angle, depth finite", "frame must be an integer"):
        assert "trajectory.csv" in text and why in text, why


def test_held_out_sequence_folds_never_share_a_sequence_and_mix_sensors():
    folders = np.array([f"o{o}_s{s}_q{q}" for o in range(4) for s in range(3) for q in range(3) for _ in range(5)])
    objects = np.array([int(f[1]) for f in folders])
    sensors = np.array([int(f.split("_s")[1][0]) for f in folders])
    folds = sequence_folds(objects, sensors, folders, 3, np.ones(len(folders), bool))
    assert len(folds) == 3
    for fit, test in folds:
        assert not set(folders[fit]) & set(folders[test])
        assert set(objects[test]) == set(range(4)) and set(sensors[test]) == {0, 1, 2}
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(len(folders)))  # each tested once
    single = np.array([f"o{o}" for o in objects])  # one sequence per object
    one = sequence_folds(objects, np.zeros_like(sensors), single, 3, np.ones(len(folders), bool))
    assert one == []  # one sequence per object: no held-out sequence probe at all


@pytest.mark.slow
def test_attribute_labels_are_learnable_from_pixels_on_held_out_sequences(tmp_path):
    """The built-in motion labels can be learned at all, from pixels, on held-out sequences of unseen objects: the
    pooled pixels' change between frames beats the majority class. (Raw pooled pixels with a linear probe do not:
    a slide's or a rotation's direction varies, only its magnitude tells the motion; README, evaluation.)"""
    from physiotouch.data import build_datamodule
    from physiotouch.evaluation.controls import RawPixels, majority_metrics, pixel_change, pixel_pass_features
    from physiotouch.evaluation.encoder import encode
    from physiotouch.evaluation.targets import clip_targets
    from physiotouch.hydra_setup import compose_config
    from physiotouch.utils.plain import to_plain

    data = to_plain(compose_config([f"paths.data_dir={tmp_path}", f"paths.output_dir={tmp_path}"]).data)
    dm = build_datamodule(data)  # the built-in data set, as `python -m physiotouch.train` makes it
    dm.prepare_data()
    dm.setup("fit")
    feats = {s: encode(RawPixels(contact=True), dm.datasets[s], 64, 0.75, errors=False, name=f"{s}:raw")
             for s in ("train", "val")}
    pooled = pool(feats)
    raw, contact = pixel_pass_features(pooled)  # one pass, as the evaluation's pixel controls
    pcfg = ProbeConfig()
    targets, not_run = clip_targets(dm.index, pooled, pcfg)
    tasks = build_tasks(pooled, dm.record["labels"], targets, pcfg)
    names = {t.name for t in tasks}
    assert not not_run and {"motion", "peak_depth", "object", "sensor", "window_motion", "window_depth",
                            "window_travel", "window_rotation"} <= names
    change, majority = run_probes(tasks, pixel_change(raw), pcfg)[0], majority_metrics(tasks, pcfg)
    assert change["val/probe_motion_accuracy"] > majority["val/probe_motion_accuracy"] + 0.05, (change, majority)
    assert majority["val/probe_peak_depth_r2"] <= 0.0 < majority["val/probe_peak_depth_mae"]
    ceiling = run_probes(tasks, contact, pcfg)[0]  # the hand-made ceiling reads each window's motion and depth
    assert ceiling["val/probe_window_motion_accuracy"] > 0.75 and ceiling["val/probe_window_depth_r2"] > 0.3, ceiling
    for task in tasks:  # unseen objects for the attributes: every non-test object tested once, by a probe fit on others
        if task.name in ("motion", "peak_depth", "surface", "window_motion", "window_depth"):
            for fit, test in task.folds:
                assert not set(pooled["object"][fit]) & set(pooled["object"][test])
            has = np.array([v is not None for v in targets[task.name].values])
            assert sorted(task.tested.tolist()) == np.flatnonzero(has).tolist()
