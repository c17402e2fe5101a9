"""Verdicts with intervals (issue 20): the object is the unit, never `better` on a point estimate, and an
instrument that is shown to detect a difference known to be there (and to find none between two seeds)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, f1_score, r2_score, roc_auc_score

from physiotouch.evaluation.verdicts import (
    grouped_auroc,
    grouped_average_precision,
    interval,
    paired,
    per_object,
    verdict,
)


def test_per_object_metrics_match_the_definitions_and_r2_parts_add_up():
    rng = np.random.default_rng(0)
    objects = np.repeat(np.arange(6), 20)
    y = rng.integers(0, 3, len(objects))
    proba = rng.dirichlet(np.ones(3), len(objects))
    acc, f1 = per_object("accuracy", y, proba, objects), per_object("macro_f1", y, proba, objects)
    for o in range(6):
        sel = objects == o
        assert acc[str(o)] == pytest.approx(float((proba[sel].argmax(1) == y[sel]).mean()))
        assert f1[str(o)] == pytest.approx(f1_score(y[sel], proba[sel].argmax(1), labels=np.unique(y[sel]),
                                                    average="macro", zero_division=0))
    target, guess = rng.normal(size=len(objects)), rng.normal(size=len(objects))
    parts = per_object("r2", target, guess, objects)  # equal object sizes: their mean is the R² of all clips
    assert np.mean(list(parts.values())) == pytest.approx(r2_score(target, guess))
    one_class = per_object("macro_auroc", np.zeros(20, int), rng.dirichlet(np.ones(2), 20), np.zeros(20))
    assert one_class == {}  # undefined for an object with one class: left out, never counted as 0


@pytest.mark.parametrize("levels", [None, 3, 7])  # continuous scores, and scores with many ties
def test_auroc_and_average_precision_are_scikit_learns(levels):
    """Each group's AUROC and average precision (all groups at once) against scikit-learn's on that group alone:
    groups of 2 to 60 clips, in any order, tied scores within and across groups, a group without positives."""
    rng = np.random.default_rng(levels or 0)
    sizes = (2, 5, 17, 60, 9)
    group = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    positive = rng.random(len(group)) < 0.4
    for g in range(4):  # both classes in the first four groups; none positive in the last
        positive[np.flatnonzero(group == g)[:2]] = [True, False]
    positive[group == 4] = False
    score = rng.random(len(group)) if levels is None else rng.integers(0, levels, len(group)) / levels
    roc, ap = (f(positive, score, group, len(sizes)) for f in (grouped_auroc, grouped_average_precision))
    for g in range(4):
        sel = group == g
        assert roc[g] == pytest.approx(roc_auc_score(positive[sel], score[sel]), abs=1e-12)
        assert ap[g] == pytest.approx(average_precision_score(positive[sel], score[sel]), abs=1e-12)
    assert np.isnan(roc[4]) and np.isnan(ap[4])  # undefined, never 0
    proba = rng.dirichlet(np.ones(3), 120)  # and as per-object macro averages over the classes present
    proba = np.round(proba, 1) if levels else proba
    y, objects = rng.integers(0, 3, 120), np.repeat(np.arange(6), 20)
    y[objects == 5] = 1  # an object with one class: left out
    for metric, score_fn in (("macro_auroc", roc_auc_score), ("macro_auprc", average_precision_score)):
        values = per_object(metric, y, proba, objects)
        assert set(values) == {"0", "1", "2", "3", "4"}
        for o, value in values.items():
            sel = objects == int(o)
            assert value == pytest.approx(np.mean([score_fn(y[sel] == c, proba[sel, c]) for c in np.unique(y[sel])]),
                                          abs=1e-12)


def test_macro_f1_and_ece_per_object_match_their_definitions():
    rng = np.random.default_rng(3)
    objects = rng.integers(0, 7, 300)
    y = rng.integers(0, 4, 300)
    proba = rng.dirichlet(np.ones(4) * 0.5, 300)
    f1, ece = per_object("macro_f1", y, proba, objects), per_object("ece", y, proba, objects, ece_bins=5)
    for o in range(7):
        sel = objects == o
        hard, conf = proba[sel].argmax(1), proba[sel].max(1)
        assert f1[str(o)] == pytest.approx(f1_score(y[sel], hard, labels=np.unique(y[sel]), average="macro",
                                                    zero_division=0), abs=1e-12)
        bins = np.minimum((conf * 5).astype(int), 4)
        expected = sum(abs(conf[bins == b].mean() - (hard == y[sel])[bins == b].mean()) * np.mean(bins == b)
                       for b in np.unique(bins))
        assert ece[str(o)] == pytest.approx(expected, abs=1e-12)


def test_interval_is_the_t_interval_and_verdicts_need_the_whole_interval():
    diffs = np.array([0.05, 0.1, -0.02, 0.08, 0.03, 0.07])
    lo, hi = interval(diffs)
    ref = stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=stats.sem(diffs))
    assert (lo, hi) == pytest.approx(ref)
    assert verdict(0.01, 0.2, "accuracy") == "better" and verdict(-0.2, -0.01, "accuracy") == "worse"
    assert verdict(-0.01, 0.2, "accuracy") == "no detectable difference"
    assert verdict(-0.2, -0.01, "mae") == "better" and verdict(0.01, 0.2, "ece") == "worse"  # lower is better


def test_paired_refuses_small_samples_and_reports_all_zero_differences():
    model = {f"o{i}": 0.9 for i in range(8)}
    control = {f"o{i}": 0.5 + 0.01 * i for i in range(8)}
    assert paired(model, control, "accuracy", 200)["verdict"] == "better"
    few = {k: model[k] for k in list(model)[:4]}
    out = paired(few, control, "accuracy", 200)  # 4 objects: a big point difference, but no verdict
    assert out["verdict"] == "insufficient data" and out["diff_ci95"] is None and out["diff"] > 0.3
    assert paired(model, control, "accuracy", 21)["verdict"] == "insufficient data"  # 21 clips (a real set's size)
    same = paired(model, dict(model), "accuracy", 200)  # every difference zero: reported, not dropped
    assert same["verdict"] == "no detectable difference" and same["diff_ci95"] == [0.0, 0.0]


@pytest.mark.slow
def test_the_instrument_detects_a_known_difference_and_none_between_seeds(tmp_path):
    """On the built-in data, with the evaluation's own probes and verdicts (run_probes, controls_for) and the
    report's verdict across replicates (replicated_verdict):
    - the per-window truth (blurred by noise) is `better` than an untrained network, the interval above zero,
      within one evaluation (over objects) and across 5 replicates;
    - untrained networks of two seeds (the same model), over 5 replicates of seed pairs fixed in advance, show no
      detectable difference across replicates. (Within one evaluation they often do: two random networks are two
      different representations, and the per-object interval cannot see seed-to-seed variation; README.)"""
    import torch

    from physiotouch.data import build_datamodule
    from physiotouch.data.trajectory import read_trajectory, window_targets
    from physiotouch.evaluation.controls import controls_for
    from physiotouch.evaluation.encoder import encode
    from physiotouch.evaluation.probes import ProbeConfig, build_tasks, pool, run_probes
    from physiotouch.evaluation.targets import clip_targets
    from physiotouch.experiments.against_controls import replicated_verdict
    from physiotouch.hydra_setup import compose_config
    from physiotouch.models import TactileVideoMAE
    from physiotouch.models.config import ModelConfig
    from physiotouch.utils.plain import to_plain

    data = to_plain(compose_config([f"paths.data_dir={tmp_path}", f"paths.output_dir={tmp_path}",
                                    "data.synthetic.width=48", "data.synthetic.height=36"]).data)
    dm = build_datamodule(data)  # the built-in set's layout (24 objects), at a smaller frame size
    dm.prepare_data()
    dm.setup("fit")
    pcfg = ProbeConfig(attributes=[])

    def untrained(seed: int) -> np.ndarray:
        torch.manual_seed(seed)
        net = TactileVideoMAE(ModelConfig())
        return pool({s: encode(net, dm.datasets[s], 64, 0.75, errors=False, name=f"{s}:u{seed}")
                     for s in ("train", "val")})

    first = untrained(10)
    targets, _ = clip_targets(dm.index, first, pcfg)
    tasks = [t for t in build_tasks(first, dm.record["labels"], targets, pcfg) if t.name.startswith("window_")]
    assert {t.name for t in tasks} == {"window_motion", "window_depth", "window_travel", "window_rotation"}
    for task in tasks:
        task.kinds = ("linear",)  # the linear probes carry the headline numbers; k-NN would double the time
    truth = read_trajectory(dm.index, sorted(set(first["folder"])))[0]
    exact = np.array([[w["depth"], w["travel"], w["rotation"]] for w in
                      (window_targets(truth[f], int(t)) for f, t in zip(first["folder"], first["t"]))])

    def probes(x: np.ndarray) -> tuple[dict, dict]:
        preds: dict = {}
        return run_probes(tasks, x, pcfg, predictions=preds)[0], preds

    keys = ("val/probe_window_motion_accuracy", "val/probe_window_depth_r2")
    known_vs_untrained, seed_vs_seed = {k: {} for k in keys}, {k: {} for k in keys}
    for r in range(5):  # replicates: seed pairs (10 + r, 20 + r), the truth blurred by noise of seed r
        blurred = exact + np.random.default_rng(r).normal(0, 0.02, exact.shape)
        (m_known, p_known), (m_a, p_a) = probes(blurred), probes((first if r == 0 else untrained(10 + r))["x"])
        m_b = probes(untrained(20 + r)["x"])[0]
        if r == 0:  # within one evaluation: better over objects, the interval above zero
            within = controls_for(m_known, {"untrained": m_a}, tasks, p_known, {"untrained": p_a}, first["object"])
            for key in (*keys, "val/probe_window_travel_r2", "val/probe_window_depth_mae"):
                row = within[key]["untrained"]
                assert row["verdict"] == "better" and row["objects"] >= 5, (key, row)
                assert (row["diff_ci95"][1] < 0) if key.endswith("_mae") else (row["diff_ci95"][0] > 0)
        for key in keys:
            known_vs_untrained[key][f"fold {r}"] = [m_known[key] - m_a[key]]
            seed_vs_seed[key][f"fold {r}"] = [m_a[key] - m_b[key]]
    for key in keys:
        found = replicated_verdict(known_vs_untrained[key], key)
        assert found["verdict"] == "better" and found["diff_ci95"][0] > 0, (key, found)
        null = replicated_verdict(seed_vs_seed[key], key)
        assert null["verdict"] == "no detectable difference", (key, null, seed_vs_seed[key])


def test_replicated_verdicts_need_three_replicates_and_a_spread():
    from physiotouch.experiments.against_controls import replicated_verdict

    folds = {f"fold {i}": [0.1 + 0.01 * i, 0.12 + 0.01 * i] for i in range(4)}  # two seeds per fold: averaged
    out = replicated_verdict(folds, "val/probe_window_depth_r2")
    assert out["replicates"] == 4 and out["verdict"] == "better" and out["diff"] == pytest.approx(0.125)
    two = replicated_verdict({k: folds[k] for k in list(folds)[:2]}, "val/probe_window_depth_r2")
    assert two["verdict"] == "insufficient data" and two["diff_ci95"] is None
    same = replicated_verdict({f"fold {i}": [0.005] for i in range(5)}, "val/probe_window_motion_accuracy")
    assert same["verdict"] == "insufficient data"  # no spread: a collapsed probe, not evidence
    zero = replicated_verdict({f"fold {i}": [0.0] for i in range(5)}, "val/probe_window_motion_accuracy")
    assert zero["verdict"] == "no detectable difference" and zero["diff_ci95"] == [0.0, 0.0]
