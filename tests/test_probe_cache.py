"""The controls' probe cache (evaluation/probe_cache.py): a hit gives back exactly what the fits gave, anything the
results depend on changes the entry's name, and a damaged, hostile or unwritable cache costs a refit, never the
evaluation."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from physiotouch.evaluation import controls
from physiotouch.evaluation.probe_cache import ProbeCache, entry_name
from physiotouch.evaluation.probes import ProbeConfig, Task, run_probes

PCFG = ProbeConfig(C_grid=[0.1, 1.0], alpha_grid=[1.0, 10.0], k_grid=[1, 3], inner_folds=2)


def _tasks(seed: int = 0) -> tuple[np.ndarray, list[Task]]:
    """90 clips of 6 objects (3 sequences each), 5 features; a 3-class task and a regression over 3 object folds."""
    rng = np.random.default_rng(seed)
    objects = np.repeat(np.arange(6), 15)
    folders = np.array([f"seq{o}_{i % 3}" for i, o in enumerate(objects)])
    y_class = rng.integers(0, 3, len(objects))
    x = rng.normal(size=(len(objects), 5)).astype(np.float32) + y_class[:, None] * 0.8
    y_reg = x[:, 0] * 2 + rng.normal(size=len(objects))
    folds = [(np.flatnonzero(objects % 3 != k), np.flatnonzero(objects % 3 == k)) for k in range(3)]
    held = folders == "seq0_0"
    return x, [Task("motion", y_class, folds, ["a", "b", "c"], groups=objects),
               Task("depth", y_reg, folds, None, groups=objects),
               Task("cube_object", objects, [(np.flatnonzero(~held), np.flatnonzero(held))],
                    [str(o) for o in range(6)], "val/loso_", ("linear",), groups=folders)]


def _fit(x, tasks):
    preds = {}
    metrics, _, choices = run_probes(tasks, x, PCFG, "control", predictions=preds)
    return metrics, choices, preds


def test_a_hit_returns_exactly_what_the_fits_gave(tmp_path):
    x, tasks = _tasks()
    cache = ProbeCache(tmp_path)
    name, hit = cache.lookup("raw_pixels", x, tasks, PCFG)
    assert hit is None and not cache.hits
    metrics, choices, preds = _fit(x, tasks)
    cache.store(name, metrics, choices, preds)
    again, hit = cache.lookup("raw_pixels", x.copy(), tasks, PCFG)  # the same bytes, another array
    assert again == name and cache.hits == ["raw_pixels"]
    m, c, p = hit
    assert m == metrics and json.dumps(c, sort_keys=True) == json.dumps(choices, sort_keys=True)
    assert sorted(p) == sorted(preds) and all(np.array_equal(p[k], preds[k]) for k in preds)
    assert [f.name for f in tmp_path.iterdir()] == [f"{name}.npz"]  # nothing half-written left beside it


def test_everything_the_results_depend_on_changes_the_entry_name():
    x, tasks = _tasks()
    name = entry_name(x, tasks, PCFG)
    moved = x.copy()
    moved[3, 2] += 1e-6
    relabelled = [replace(tasks[0], y=np.roll(tasks[0].y, 1)), *tasks[1:]]
    refolded = [replace(tasks[0], folds=tasks[0].folds[:2]), *tasks[1:]]
    regrouped = [replace(tasks[0], groups=tasks[0].groups[::-1].copy()), *tasks[1:]]
    others = [entry_name(moved, tasks, PCFG), entry_name(x, relabelled, PCFG), entry_name(x, refolded, PCFG),
              entry_name(x, regrouped, PCFG), entry_name(x, tasks[:2], PCFG),
              entry_name(x, tasks, replace(PCFG, C_grid=[0.1, 10.0])), entry_name(x, tasks, replace(PCFG, ece_bins=5)),
              entry_name(x, tasks, replace(PCFG, backend="sklearn"))]
    assert len({name, *others}) == len(others) + 1
    assert entry_name(x.copy(), [replace(t) for t in tasks], PCFG) == name  # equal content, equal name


@pytest.mark.parametrize("damage", ["truncated", "not_npz", "pickled", "wrong_keys", "wrong_types"])
def test_a_damaged_or_hostile_entry_is_refit_with_one_line_and_nothing_executed(tmp_path, caplog, damage):
    x, tasks = _tasks()
    cache = ProbeCache(tmp_path)
    name, _ = cache.lookup("untrained", x, tasks, PCFG)
    metrics, choices, preds = _fit(x, tasks)
    cache.store(name, metrics, choices, preds)
    path = tmp_path / f"{name}.npz"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "not_npz":
        path.write_text("<html>not a cache</html>")
    elif damage == "pickled":  # an object array would need pickle to load: refused, never unpickled
        with path.open("wb") as fh:
            np.savez(fh, head=np.array([{"metrics": {}}], dtype=object))
    elif damage == "wrong_keys":
        with path.open("wb") as fh:
            np.savez(fh, head=np.array(json.dumps({"metrics": {}})))
    else:
        with path.open("wb") as fh:
            np.savez(fh, head=np.array(json.dumps({"metrics": {"a": "b"}, "choices": {}, "pred_keys": ["k"]})),
                     pred0=np.array(["text"]))
    with caplog.at_level(logging.WARNING, logger="physiotouch.evaluation.probe_cache"):
        again, hit = cache.lookup("untrained", x, tasks, PCFG)
    assert again == name and hit is None and not cache.hits
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and str(path) in lines[0] and "refitting untrained" in lines[0]
    cache.store(name, metrics, choices, preds)  # the refit overwrites it
    assert cache.lookup("untrained", x, tasks, PCFG)[1][0] == metrics


def test_an_unwritable_cache_folder_costs_a_warning_not_the_evaluation(tmp_path, caplog):
    x, tasks = _tasks()
    blocker = tmp_path / "probes"
    blocker.write_text("a file where the folder should be")
    cache = ProbeCache(blocker)
    metrics, choices, preds = _fit(x, tasks)
    with caplog.at_level(logging.WARNING, logger="physiotouch.evaluation.probe_cache"):
        cache.store(entry_name(x, tasks, PCFG), metrics, choices, preds)
    assert any("cannot write" in r.getMessage() and "eval.probe_cache=false" in r.getMessage() for r in caplog.records)


def test_control_metrics_fit_each_control_once_and_read_it_back_after(tmp_path, monkeypatch):
    """Two evaluations' controls on the same clips: the second fits nothing and gives the same values."""
    import torch

    from physiotouch.data import build_datamodule
    from physiotouch.data.synthetic import SynthConfig, generate
    from physiotouch.evaluation.probes import build_tasks, pool
    from physiotouch.evaluation.targets import clip_targets
    from physiotouch.hydra_setup import compose_config
    from physiotouch.models import build_model
    from tests.conftest import train_overrides

    data = tmp_path / "data"
    generate(SynthConfig(out=str(data), num_objects=6, frames=10, width=32, height=24, seed=3))
    cfg = compose_config(train_overrides(data, tmp_path / "run"))
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    torch.manual_seed(0)
    model = build_model(**cfg.model)
    pcfg = replace(PCFG, attributes=["motion"], window_targets=[])
    raw = controls.RawPixels()
    feats = {s: controls.encode(raw, datamodule.datasets[s], 16, 0.75, errors=False, device="cpu", name=s)
             for s in ("train", "val")}
    pooled = pool(feats)
    targets, _ = clip_targets(datamodule.index, pooled, pcfg)
    tasks = build_tasks(pooled, datamodule.record["labels"], targets, pcfg)
    fits = []
    real = controls.run_probes
    monkeypatch.setattr(controls, "run_probes", lambda *a, **k: fits.append(a[3]) or real(*a, **k))
    cache = ProbeCache(tmp_path / "probes")
    first = controls.control_metrics(model, datamodule.datasets, tasks, pcfg, 16, "cpu", None, 0, cache=cache)
    # one fit per control and part of its tasks (controls.control_work), as many parts for every control
    assert sorted(set(fits)) == ["contact_features", "pixel_change", "raw_pixels", "untrained"] and not cache.hits
    fitted = Counter(fits)
    assert len(set(fitted.values())) == 1
    fits.clear()
    cache = ProbeCache(tmp_path / "probes")
    second = controls.control_metrics(model, datamodule.datasets, tasks, pcfg, 16, "cpu", None, 0, cache=cache)
    assert fits == [] and Counter(cache.hits) == fitted  # each part read back once
    assert first[0] == second[0] and json.dumps(first[1], sort_keys=True) == json.dumps(second[1], sort_keys=True)
    for name, preds in first[2].items():
        assert all(np.array_equal(preds[k], second[2][name][k]) for k in preds)
