"""The batched probe fits against scikit-learn, the oracle: the tuned protocol fit by torch (`backend: torch`, all
folds and grid values together) and one fit at a time by scikit-learn (`backend: sklearn`) choose the same C, α and
k and give the same metrics, within the tolerances stated here."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from physiotouch.evaluation.probes import object_folds, run_probes
from physiotouch.evaluation.settings import ProbeConfig
from physiotouch.evaluation.tuned import fit_tuned, grid, inner_folds

METRIC_TOLERANCE = 0.02  # accuracy, F1, AUROC, AUPRC, R² (absolute): a clip or two of the ~100 tested here
CHOICE_TOLERANCE = 0.01  # a different C, α or k only where scikit-learn's inner error for it is this close to its best
# ... or one scored clip away (the inner error's resolution): both solvers stop at gradient 1e-4, and on a flat optimum
# (weak regularisation, few clips) either one can sit a clip away from the exact optimum (measured: tol=1e-9 fits)
PROBABILITY_TOLERANCE = 0.01  # mean |probability| difference (both solvers stop at gradient 1e-4 on a flat optimum)


def _data(seed: int, n_objects: int = 10, per_object: int = 30, dim: int = 24, classes: int = 3):
    """Clips of objects: each object's clips share a class and an object offset; the class shows weakly in a few
    correlated features, so the best C is in the middle of the grid, not at an end."""
    rng = np.random.default_rng(seed)
    objects = np.repeat(np.arange(n_objects), per_object)
    y = objects % classes
    basis = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    x = rng.normal(size=(len(objects), dim)) + rng.normal(size=(n_objects, dim))[objects] * 0.7
    x[:, :3] += 0.6 * np.eye(classes)[y][:, :3] if classes >= 3 else 0.6 * y[:, None]
    return (x @ basis).astype(np.float32), y, objects


def _same_choices(ours, oracle, kind: str, regression: bool, cfg) -> None:
    """The same value per fold, or a near-tie: one whose inner error (by scikit-learn's fits) is within
    CHOICE_TOLERANCE of the best (the two solvers' last digits can order near-equal grid values either way)."""
    values = grid(kind, regression, cfg)[1]
    for f, (a, b) in enumerate(zip(ours.chosen, oracle.chosen)):
        if a != b:
            errors = oracle.inner_errors[f]
            assert errors[values.index(a)] - min(errors) <= CHOICE_TOLERANCE * max(1.0, min(errors)), (f, a, b, errors)


def _mean_abs(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).mean())


def test_inner_folds_keep_groups_apart():
    groups = np.array(list("aabbccddee"))
    for fit, val in inner_folds(groups, 3):
        assert not set(groups[fit]) & set(groups[val])
    assert inner_folds(np.array(list("aaaa")), 3) == []  # one group: nothing to tune on


@pytest.mark.parametrize("kind,classes", [("linear", 3), ("linear", 2), ("linear", None), ("knn", 3), ("knn", None)])
def test_batched_fits_choose_and_predict_as_scikit_learn_does(kind, classes):
    x, y, objects = _data(seed=0, classes=classes or 3)
    if classes is None:  # a regression target: a feature's projection plus noise
        y = (x[:, 0] * 2 + np.random.default_rng(1).normal(size=len(x))).astype(np.float64)
    folds = object_folds(objects, np.ones(len(x), bool), 5)
    cfg = ProbeConfig()
    fitted = {b: fit_tuned(y, folds, objects, classes, x, kind, cfg, b) for b in ("torch", "sklearn")}
    assert all(fitted["torch"].tuned)
    _same_choices(fitted["torch"], fitted["sklearn"], kind, classes is None, cfg)
    for f, (_, test) in enumerate(folds):
        if fitted["torch"].chosen[f] != fitted["sklearn"].chosen[f]:
            continue  # a near-tie chosen the other way: different probes, compared by the metrics test below
        a, b = (fitted[k].predict(f, x[test]) for k in ("torch", "sklearn"))
        if classes is None:
            assert np.allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(b).max()), f
        else:
            assert _mean_abs(a, b) < PROBABILITY_TOLERANCE and (a.argmax(1) != b.argmax(1)).mean() < 0.02, f


@pytest.mark.slow
def test_every_metric_of_every_probe_agrees_on_the_built_in_layout(small_data, tmp_path):
    """Real clips (the small built-in set, raw pooled pixels: correlated, 576 values): run_probes on both backends
    gives the same metrics and the same choices, probe by probe."""
    from physiotouch.data import build_datamodule
    from physiotouch.evaluation.controls import RawPixels
    from physiotouch.evaluation.encoder import encode
    from physiotouch.evaluation.probes import build_tasks, pool
    from physiotouch.evaluation.targets import clip_targets

    from .conftest import train_overrides

    overrides = dict(o.split("=", 1) for o in train_overrides(small_data, tmp_path))
    dm = build_datamodule({"_target_": "physiotouch.data.TactileDataModule", "root": str(small_data),
                           "index": str(small_data / "index.csv"), "image_size": 56, "batch_size": 8,
                           "cache_dir": overrides["data.cache_dir"],
                           "split": {"val_fraction": 0.2, "test_fraction": 0.2, "exclude": []}})
    dm.prepare_data()
    dm.setup("validate")
    feats = {s: encode(RawPixels(), dm.datasets[s], 64, 0.75, errors=False, name=f"{s}:raw") for s in ("train", "val")}
    pooled = pool(feats)
    cfg = ProbeConfig()
    tasks = build_tasks(pooled, dm.record["labels"], clip_targets(dm.index, pooled, cfg)[0], cfg)
    assert tasks
    # 1. every probe at its default value (no tuning): the solvers alone, on correlated real features. LoSO's
    # probes fit two sensors and are scored on a third at chance level, where the last digits of the weights
    # decide a clip either way: compared in step 2 by their choices only.
    fixed = {b: run_probes(tasks, pooled["x"], replace(cfg, backend=b, tune=False))[0] for b in ("torch", "sklearn")}
    assert fixed["torch"].keys() == fixed["sklearn"].keys()
    for key, value in fixed["sklearn"].items():
        if "/loso_" in key:
            continue
        tolerance = 0.05 if key.endswith(("_ece", "_mae")) else METRIC_TOLERANCE
        assert abs(fixed["torch"][key] - value) <= tolerance * max(1.0, abs(value)), (key, fixed["torch"][key], value)
    # 2. tuned: the same choices, or near-ties by scikit-learn's own inner errors (LoSO: see step 1).
    results = {b: run_probes(tasks, pooled["x"], replace(cfg, backend=b)) for b in ("torch", "sklearn")}
    (m_torch, _, c_torch), (m_sk, _, c_sk) = results["torch"], results["sklearn"]
    assert m_torch.keys() == m_sk.keys() and c_torch.keys() == c_sk.keys()
    differ = {probe for probe in c_sk if "/loso_" in probe}
    task_of = {task.key("linear", "")[:-1]: task for task in tasks}
    for probe, ours in c_torch.items():
        oracle = c_sk[probe]
        values = grid("knn" if probe.endswith("_knn") else "linear", ours["name"] == "alpha", cfg)[1]
        for f, (a, b) in enumerate(zip(ours["per_fold"], oracle["per_fold"])):
            if a != b and probe not in differ:
                errors, scored = oracle["inner_errors"][f], len(task_of[probe.removesuffix("_knn")].folds[f][0])
                one_clip = 1.0 / scored if ours["name"] == "C" else 0.0  # an accuracy's resolution
                assert errors[values.index(a)] - min(errors) <= max(CHOICE_TOLERANCE * max(1.0, min(errors)),
                                                                    one_clip + 1e-12), (probe, f, errors)
                differ.add(probe)
    for key in m_torch:
        if any(key.startswith(probe + "_") and key[len(probe) + 1:].count("_") <= 1 for probe in differ):
            continue  # another, equally good choice: another probe
        tolerance = 0.05 if key.endswith(("_ece", "_mae")) else METRIC_TOLERANCE
        assert abs(m_torch[key] - m_sk[key]) <= tolerance * max(1.0, abs(m_sk[key])), (key, m_torch[key], m_sk[key])


def test_tasks_on_the_same_features_share_their_work_and_get_the_same_answers():
    """Three tasks on the same object folds (two regressions, one classification, k-NN and linear): with one
    SharedWork each fit's ridge decomposition and each (fit, query) neighbour search is made once, and every
    prediction is what a task fitted alone gets."""
    from physiotouch.evaluation.probe_fits import SharedWork

    x, y, objects = _data(seed=2)
    rng = np.random.default_rng(3)
    targets = {"a": x[:, 0] * 2 + rng.normal(size=len(x)), "b": x[:, 1] - rng.normal(size=len(x))}
    folds = object_folds(objects, np.ones(len(x), bool), 5)
    cfg = ProbeConfig()
    shared = SharedWork(x)
    for kind in ("linear", "knn"):
        for name, t in targets.items():
            together = fit_tuned(t, folds, objects, None, x, kind, cfg, "torch", shared)
            alone = fit_tuned(t, folds, objects, None, x, kind, cfg, "torch")
            assert together.chosen == alone.chosen
            for f, (_, test) in enumerate(folds):
                assert np.array_equal(together.predict_clips(f, test), alone.predict(f, x[test])), (kind, name, f)
        together = fit_tuned(y, folds, objects, 3, x, kind, cfg, "torch", shared)
        alone = fit_tuned(y, folds, objects, 3, x, kind, cfg, "torch")
        assert together.chosen == alone.chosen
        for f, (_, test) in enumerate(folds):
            assert np.array_equal(together.predict_clips(f, test), alone.predict(f, x[test])), (kind, f)
    fits = {fit.tobytes() for fit, _ in folds} | {fit[a].tobytes() for fit, _ in folds
                                                   for a, _ in inner_folds(objects[fit], cfg.inner_folds)}
    assert shared.decompositions == len(fits)  # one decomposition per distinct fit set, for both regressions
    assert shared.searches == 5 * cfg.inner_folds + 5  # one search per (fit, scored) pair for all three tasks: the
    # inner pairs, and each outer fold's (fit, tested)


@pytest.mark.parametrize("classes", [3, 10])  # all fits over all clips, and each fit over its own clips (10 >= 8)
def test_tasks_with_the_same_labels_fit_together_as_each_alone(classes):
    """The object probe and the leave-one-sensor-out probes share their labels and are fitted in one batch
    (`fit_tuned_together`): each task gets the choices and predictions it gets fitted alone (within the tolerances
    above: a batch changes the order of float32 sums, and both stop at gradient 1e-4 on a flat optimum), and its fits
    agree with scikit-learn's as every batched fit does."""
    from physiotouch.evaluation.tuned import fit_tuned_together

    x, _, objects = _data(seed=4, n_objects=20, per_object=12, classes=classes)
    y = objects % classes
    sensors = np.arange(len(x)) % 3  # a held-out "sensor": every third clip
    protocols = [(object_folds(objects, np.ones(len(x), bool), 5), objects),
                 *[([(np.flatnonzero(sensors != s), np.flatnonzero(sensors == s))], objects) for s in range(3)]]
    cfg = ProbeConfig()
    together = fit_tuned_together(y, protocols, classes, x, "linear", cfg, "torch")
    assert len(together) == len(protocols)
    for (folds, groups), fitted in zip(protocols, together):
        alone = fit_tuned(y, folds, groups, classes, x, "linear", cfg, "torch")
        assert fitted.tuned == alone.tuned
        _same_choices(fitted, alone, "linear", False, cfg)
        for f, (_, test) in enumerate(folds):
            if fitted.chosen[f] == alone.chosen[f]:
                a, b = fitted.predict(f, x[test]), alone.predict(f, x[test])
                flips = int((a.argmax(1) != b.argmax(1)).sum())  # clips at a near-tie of two classes
                assert _mean_abs(a, b) < PROBABILITY_TOLERANCE and flips <= max(1, 0.02 * len(test)), (f, flips)
    oracle = fit_tuned(y, *protocols[1], classes, x, "linear", cfg, "sklearn")
    _same_choices(together[1], oracle, "linear", False, cfg)


def test_fits_over_their_own_clips_equal_fits_over_all_clips(monkeypatch):
    """The two layouts of `logistic_fits` (each fit's own clips gathered, from GATHER_CLASSES classes on and within
    GATHER_MAX_VALUES; else one product over every clip) solve the same problems: the same choices and predictions."""
    from physiotouch.evaluation import logistic

    x, _, objects = _data(seed=5, n_objects=20, per_object=12, classes=10)
    y = objects % 10
    folds = object_folds(objects, np.ones(len(x), bool), 5)
    cfg = ProbeConfig()
    gathered = fit_tuned(y, folds, objects, 10, x, "linear", cfg, "torch")
    monkeypatch.setattr(logistic, "GATHER_MAX_VALUES", 0)  # too large to gather: the shared product
    shared = fit_tuned(y, folds, objects, 10, x, "linear", cfg, "torch")
    _same_choices(gathered, shared, "linear", False, cfg)
    for f, (_, test) in enumerate(folds):
        if gathered.chosen[f] == shared.chosen[f]:
            a, b = gathered.predict(f, x[test]), shared.predict(f, x[test])
            assert _mean_abs(a, b) < PROBABILITY_TOLERANCE and (a.argmax(1) != b.argmax(1)).sum() <= 1, f
