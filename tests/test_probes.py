"""Built-in data a representation can be tested on: several contact sequences per object with their attributes
(labels.csv), probes that never test on a sequence they were fit on, and controls for every attribute."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from physiotouch.data.synthetic import MOTIONS, SynthConfig, generate
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
    for shape in per_object:  # every object is pressed, slid and rotated
        assert {r["motion"] for r in rows if r["shape"] == shape} == set(MOTIONS)
    depths = [float(r["peak_depth"]) for r in rows]
    assert 0 < min(depths) < max(depths) <= 1.0 and len(set(depths)) > 0.9 * len(depths)  # each its own depth


@pytest.mark.slow
def test_check_validates_labels_csv(seq_data, tmp_path):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(seq_data, data)
    with (data / "labels.csv").open("a") as fh:
        fh.write("data_nowhere_x_digit,press,0.5,sphere,smooth\n" + f"{(data / 'index.csv').read_text().split(',')[0]}"
                 ",slide,deep,sphere,smooth\n")
    out = subprocess.run([sys.executable, "-m", "physiotouch.data", "check", "--root", str(data), "--index",
                          str(data / "index.csv")], capture_output=True, text=True)
    assert out.returncode == 1
    assert "labels.csv" in out.stdout + out.stderr and "is not in the index" in out.stdout + out.stderr
    assert "labelled twice" in out.stdout + out.stderr


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
    from physiotouch.evaluation.controls import RawPixels, majority_metrics, pixel_change
    from physiotouch.evaluation.encoder import encode
    from physiotouch.evaluation.run import evaluation_labels
    from physiotouch.hydra_setup import compose_config
    from physiotouch.utils.plain import to_plain

    data = to_plain(compose_config([f"paths.data_dir={tmp_path}", f"paths.output_dir={tmp_path}"]).data)
    dm = build_datamodule(data)  # the built-in data set, as `python -m physiotouch.train` makes it
    dm.prepare_data()
    dm.setup("fit")
    feats = {s: encode(RawPixels(), dm.datasets[s], 64, 0.75, errors=False, name=f"{s}:raw") for s in ("train", "val")}
    pooled = pool(feats)
    pcfg = ProbeConfig()
    tasks = build_tasks(pooled, dm.record["labels"], evaluation_labels(dm, pooled["folder"]), pcfg)
    names = {t.name for t in tasks}
    assert {"motion", "peak_depth", "object", "sensor"} <= names  # surface needs both kinds among train objects
    change, majority = run_probes(tasks, pixel_change(pooled["x"]), pcfg)[0], majority_metrics(tasks, pcfg)
    assert change["val/probe_motion_accuracy"] > majority["val/probe_motion_accuracy"] + 0.05, (change, majority)
    assert majority["val/probe_peak_depth_r2"] <= 0.0 < majority["val/probe_peak_depth_mae"]
    for task in tasks:  # unseen objects for the attributes: every non-test object tested once, by a probe fit on others
        if task.name in ("motion", "peak_depth", "surface"):
            for fit, test in task.folds:
                assert not set(pooled["object"][fit]) & set(pooled["object"][test])
            assert sorted(task.tested.tolist()) == sorted(np.flatnonzero(np.isin(pooled["folder"], list(
                evaluation_labels(dm, pooled["folder"])))).tolist())
