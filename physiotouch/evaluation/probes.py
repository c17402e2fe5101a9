"""Probes on frozen features, each scored only on sequences it was not fit on.

Every probe is a `Task`: labels for the pooled clips of the train and validation splits (train first), and folds
of (fit clips, tested clips) that never share a sequence folder (`probe_splits.json` lists them):
- `object` (held-out sequences): each object's sequences are dealt into `sequence_folds` folds (sensors spread over
  the folds); each fold is tested by a probe fit on the other folds' sequences. Objects with one sequence are left out.
- `sensor`: fit on the train split, tested on the validation split (objects the probe never saw).
- attributes on unseen objects (targets.py: each window's own motion, depth, travel and rotation from
  `trajectory.csv`; the sequence's attributes from `labels.csv`): the non-test objects dealt into `object_folds`
  folds, each fold's objects tested by a probe fit on the other objects (every object tested once: two validation
  objects alone give too noisy a number); classes for text values, regression (R², MAE) for numbers.
- LoSO (leave one sensor out): the object probe fit on all sensors but one, tested on the held-out sensor.
- `diagnostic_reid_object` (re-identification): early vs late windows of the *same* sequences. It measures "which
  recording is this", never the representation; reported apart, never an objective or a headline.
Linear probes (logistic / ridge regression on standardised features) and k-NN, scored with torchmetrics / sklearn.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassAveragePrecision,
    MulticlassCalibrationError,
    MulticlassF1Score,
)

from physiotouch.utils.progress import progress
from physiotouch.utils.threads import one_thread

from .probe_fits import SharedWork
from .settings import ECE_BINS, ProbeConfig
from .targets import Target, as_array
from .tuned import FittedProbe, fit_tuned_together, grid
from .verdicts import overall

POOLED = ("x", "object", "sensor", "t", "start", "end", "folder")


@dataclass
class Task:
    name: str
    y: np.ndarray  # per pooled clip: class ids, or float targets (regression); only clips in a fold are read
    folds: list[tuple[np.ndarray, np.ndarray]]  # (fit indices, tested indices) into the pooled clips
    classes: list | None  # None: regression
    prefix: str = "val/probe_"
    kinds: tuple = ("linear", "knn")
    # per pooled clip: the inner folds' unit (what the outer folds keep apart: objects for attributes, sequences for
    # the object probe; LoSO tunes on held-out sequences of its training sensors, as domain generalisation's
    # "training-domain validation" does: the held-out sensor is never looked at to choose C)
    groups: np.ndarray | None = None

    @property
    def tested(self) -> np.ndarray:
        return np.concatenate([t for _, t in self.folds])

    def key(self, kind: str, metric: str) -> str:
        return f"{self.prefix}{self.name}_{'knn_' if kind == 'knn' else ''}{metric}"


def pool(feats: dict, splits=("train", "val")) -> dict[str, np.ndarray]:
    """The splits' clips one after the other, with `split` = the position of each clip's split in `splits`."""
    out = {k: np.concatenate([feats[s][k] for s in splits]) for k in POOLED}
    out["split"] = np.concatenate([np.full(len(feats[s]["x"]), i) for i, s in enumerate(splits)])
    return out


def sequence_folds(objects: np.ndarray, sensors: np.ndarray, folders: np.ndarray, k_max: int, among: np.ndarray
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deal each object's sequence folders (of the clips in `among`) into K folds, the i-th sequence of its s-th
    sensor into fold (i + s) % K, so that folds mix sensors; K = min(k_max, fewest sequences of an object)."""
    per_object: dict = {}
    for o, s, f in zip(objects[among], sensors[among], folders[among]):
        per_object.setdefault(o, {}).setdefault(s, set()).add(f)
    counts = [sum(len(v) for v in by_sensor.values()) for by_sensor in per_object.values()]
    eligible = [c for c in counts if c >= 2]
    if not eligible:
        return []
    k = max(2, min(k_max, min(eligible)))
    fold_of = {}
    for by_sensor in per_object.values():
        if sum(len(v) for v in by_sensor.values()) < 2:
            continue
        assigned = {f: (i + s_rank) % k for s_rank, s in enumerate(sorted(by_sensor))
                    for i, f in enumerate(sorted(by_sensor[s]))}
        if len(set(assigned.values())) < 2:  # all in one fold: deal them in turn instead
            assigned = {f: i % k for i, f in enumerate(sorted(assigned))}
        fold_of.update(assigned)
    fold = np.array([fold_of.get(f, -1) for f in folders])
    fold[~among] = -1
    return [(np.flatnonzero((fold >= 0) & (fold != i)), np.flatnonzero(fold == i)) for i in range(k)]


def object_folds(objects: np.ndarray, among: np.ndarray, k_max: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The objects of the clips in `among`, sorted and dealt in turn into K = min(k_max, objects) folds."""
    names = sorted(set(objects[among].tolist()))
    if len(names) < 2:
        return []
    k = min(k_max, len(names))
    fold = np.array([names.index(o) % k if o in names else -1 for o in objects.tolist()])
    fold[~among] = -1
    return [(np.flatnonzero((fold >= 0) & (fold != i)), np.flatnonzero(fold == i)) for i in range(k)]


def time_split_mask(t: np.ndarray, start: np.ndarray, end: np.ndarray,
                    cfg: ProbeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Fit windows end before the cut; test windows start (t-3) at least `gap` frames after it."""
    cut = start + cfg.time_split * (end - start)
    return t < cut, (t - 3) >= cut + cfg.gap


def build_tasks(p: dict, vocab: dict, attributes: dict[str, Target], cfg: ProbeConfig, root: str = "val",
                object_among: np.ndarray | None = None, attributes_by_split: bool = False) -> list[Task]:
    """The probes for pooled clips `p` (split 0 fits the sensor probe; split 1 is tested); `attributes`: the
    per-clip targets of the attribute probes (targets.clip_targets). `object_among`: the clips
    the held-out sequence object probe deals folds from (default: all). `attributes_by_split`: attribute probes fit
    on split 0 and tested on split 1 (the release's test look) instead of object folds."""
    fit, test = np.flatnonzero(p["split"] == 0), np.flatnonzero(p["split"] == 1)
    prefix, tasks = f"{root}/probe_", []
    if len(np.unique(p["sensor"][fit])) >= 2 and len(test):
        tasks.append(Task("sensor", p["sensor"], [(fit, test)], vocab["sensor"], prefix, groups=p["object"]))
    among = np.ones(len(p["x"]), bool) if object_among is None else object_among
    folds = sequence_folds(p["object"], p["sensor"], p["folder"], cfg.sequence_folds, among)
    if folds:
        tasks.append(Task("object", p["object"], folds, vocab["object"], prefix, groups=p["folder"]))
    for name, target in attributes.items():
        y, classes = as_array(target)
        has = (y >= 0) if classes is not None else ~np.isnan(y)
        folds = ([(fit[has[fit]], test[has[test]])] if attributes_by_split else
                 object_folds(p["object"], among & has, cfg.object_folds))
        if not folds or not all(len(f) and len(t) for f, t in folds):
            continue
        if classes is not None and any(len(np.unique(y[f])) < 2 for f, _ in folds):
            continue  # a fold whose fitting objects show one class only
        tasks.append(Task(name, y, folds, classes, prefix, groups=p["object"]))
    for s, sensor in enumerate(vocab["sensor"]):  # leave one sensor out (linear only)
        held = p["sensor"] == s
        if held.any() and not held.all() and len(np.unique(p["object"][~held])) >= 2:
            tasks.append(Task(f"{sensor}_object", p["object"], [(np.flatnonzero(~held), np.flatnonzero(held))],
                              vocab["object"], f"{root}/loso_", ("linear",), groups=p["folder"]))
    early, late = time_split_mask(p["t"], p["start"], p["end"], cfg)
    if late.any() and len(np.unique(p["object"][early])) >= 2:
        tasks.append(Task("reid_object", p["object"], [(np.flatnonzero(early), np.flatnonzero(late))],
                          vocab["object"], f"{root}/diagnostic_", ("linear",)))
    # a classifier needs two classes to fit on in every fold (e.g. one test object: no object probe on test)
    return [t for t in tasks if t.classes is None or all(len(np.unique(t.y[f])) >= 2 for f, _ in t.folds)]


def fit_probe(kind: str, x: np.ndarray, y: np.ndarray, cfg: ProbeConfig, regression: bool = False):
    """One scikit-learn probe, fitted: linear (logistic or ridge regression on standardised features, at cfg.C or
    cfg.ridge_alpha) or k-NN (cosine, cfg.knn_k). The tuned protocol's oracle (evaluation/tuned.py)."""
    if kind == "linear":
        head = Ridge(alpha=cfg.ridge_alpha) if regression else LogisticRegression(C=cfg.C, max_iter=cfg.max_iter)
        return make_pipeline(StandardScaler(), head).fit(x, y)
    knn = KNeighborsRegressor if regression else KNeighborsClassifier
    return knn(n_neighbors=min(cfg.knn_k, len(y)), metric="cosine", weights="distance").fit(x, y)


def fit_tasks(tasks: list[Task], x: np.ndarray, kind: str, cfg: ProbeConfig, shared: SharedWork | None = None
              ) -> list[FittedProbe]:
    """Every fold's probe of each task on features `x`, each tuned by inner cross-validation (evaluation/tuned.py),
    for tasks with the same labels: their fits made together (the object probe and the leave-one-sensor-out probes
    all predict the object: one batch of fits instead of one per task). `shared`: what the tasks before them on the
    same `x` computed that these can reuse."""
    classes = None if tasks[0].classes is None else len(tasks[0].classes)
    return fit_tuned_together(tasks[0].y, [(t.folds, t.groups) for t in tasks], classes, x, kind, cfg, cfg.backend,
                              shared)


def same_labels(tasks: list[Task]) -> list[list[Task]]:
    """The tasks grouped by their labels (equal arrays and classes), in their order."""
    groups: dict = {}
    for task in tasks:
        key = (task.y.dtype.str, task.y.tobytes(), None if task.classes is None else tuple(task.classes))
        groups.setdefault(key, []).append(task)
    return list(groups.values())


def score_task(task: Task, fitted: FittedProbe, cfg: ProbeConfig) -> tuple[dict, np.ndarray]:
    """Each fold's tested clips (of the features the probe was fit on) predicted by the probe fit on that fold
    -> (metrics, predictions over `tested`)."""
    pred = np.concatenate([fitted.predict_clips(f, t) for f, (_, t) in enumerate(task.folds)])
    return task_metrics(task, pred, cfg), pred


def task_metrics(task: Task, pred: np.ndarray, cfg: ProbeConfig) -> dict[str, float]:
    y = task.y[task.tested]
    if task.classes is None:
        return {"r2": float(r2_score(y, pred)), "mae": float(mean_absolute_error(y, pred))}
    return classification_metrics(pred, y, len(task.classes), cfg.ece_bins)


def classification_metrics(proba: np.ndarray, y: np.ndarray, num_classes: int, ece_bins: int = ECE_BINS
                           ) -> dict[str, float]:
    """Accuracy, macro / micro F1, macro AUROC and AUPRC (over the classes present in y), ECE."""
    p, t = torch.as_tensor(proba, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    with warnings.catch_warnings():
        # Per-class scores of classes absent from y are undefined and torchmetrics warns about each; `_present`
        # averages over the classes that occur, so those scores are never used.
        warnings.filterwarnings("ignore", message="No positive samples in targets")
        out = {"accuracy": MulticlassAccuracy(num_classes, average="micro")(p, t).item(),
               "macro_f1": _present(MulticlassF1Score(num_classes, average=None)(p, t), y),
               "micro_f1": MulticlassF1Score(num_classes, average="micro")(p, t).item(),
               "ece": MulticlassCalibrationError(num_classes, n_bins=ece_bins, norm="l1")(p, t).item()}
        if len(np.unique(y)) >= 2:
            out["macro_auroc"] = _present(MulticlassAUROC(num_classes, average=None)(p, t), y)
            out["macro_auprc"] = _present(MulticlassAveragePrecision(num_classes, average=None)(p, t), y)
    return out


def _present(per_class: torch.Tensor, y: np.ndarray) -> float:
    """Macro average over the classes that occur in the tested labels (absent classes have no defined score)."""
    return float(per_class[np.unique(y)].mean())


def headline_metrics(task: Task, pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro F1 (over the classes in the tested labels, as `classification_metrics`), or R² and MAE:
    the robustness sweep's numbers, without the curves' cost."""
    y = task.y[task.tested]
    if task.classes is None:
        return {"r2": float(r2_score(y, pred)), "mae": float(mean_absolute_error(y, pred))}
    # written out (verdicts.overall): scikit-learn's f1_score checks its arguments for milliseconds a call, and the
    # robustness sweep asks for it on every task under every perturbation
    return {metric: overall(metric, y, pred) for metric in ("accuracy", "macro_f1")}


def run_probes(tasks: list[Task], x: np.ndarray, cfg: ProbeConfig, label: str = "model",
               fitted_linear: dict | None = None, predictions: dict | None = None
               ) -> tuple[dict[str, float], dict, dict]:
    """Every task's probes fit and scored on features `x` (pooled clips). -> (flat metrics, curves for plots, the
    regularisation each fold's probe used: {probe key: {name, per_fold, tuned, inner_errors}}). `fitted_linear`,
    if given, receives each task's fitted linear probe by its key (the robustness sweep tests them again);
    `predictions` each probe's predictions over its task's tested clips (the verdicts pair them by object)."""
    # one torch thread: the same numbers whatever the number of cores and in either of the evaluation's threads (the
    # sums of a fit change in their last bits with the thread count); measured, two threads fit the model's probes
    # here 5% faster, and the evaluation gives the other core to its encodings (utils/threads.py)
    with one_thread():
        return _run_probes(tasks, x, cfg, label, fitted_linear, predictions)


def _run_probes(tasks: list[Task], x: np.ndarray, cfg: ProbeConfig, label: str, fitted_linear: dict | None,
                predictions: dict | None) -> tuple[dict[str, float], dict, dict]:
    metrics, curves, choices = {}, {}, {}
    shared = SharedWork(x)
    fits: dict[tuple[int, str], FittedProbe] = {}  # (task's position, kind) -> its fitted probe
    position = {id(task): n for n, task in enumerate(tasks)}
    groups = same_labels(tasks)
    for group in progress(groups, len(groups), f"probes ({label})"):
        for kind in dict.fromkeys(k for task in group for k in task.kinds):
            members = [task for task in group if kind in task.kinds]
            fits.update({(position[id(t)], kind): f for t, f in zip(members, fit_tasks(members, x, kind, cfg, shared))})
    for n, task in enumerate(tasks):
        if task.classes is not None:
            tested = task.y[task.tested]
            metrics[task.key("linear", "classes")] = float(len(np.unique(tested)))  # what chance is relative to
            metrics[task.key("linear", "chance")] = 1.0 / max(1, len(np.unique(tested)))
        for kind in task.kinds:
            fitted = fits[(n, kind)]
            if kind == "linear" and fitted_linear is not None:
                fitted_linear[task.key("linear", "")] = fitted
            scores, pred = score_task(task, fitted, cfg)
            if predictions is not None:
                predictions[task.key(kind, "")] = pred
            metrics.update({task.key(kind, k): v for k, v in scores.items()})
            choices[task.key(kind, "")[:-1]] = {"name": grid(kind, task.classes is None, cfg)[0],
                                                "per_fold": fitted.chosen, "tuned": fitted.tuned,
                                                "inner_errors": fitted.inner_errors}
            if kind == "linear" and task.classes is not None and task.prefix.endswith("/probe_"):
                curves[task.name] = {"proba": pred, "y": task.y[task.tested], "names": task.classes}
    return metrics, curves, choices


def probe_splits(tasks: list[Task], folders: np.ndarray) -> dict:
    """For `probe_splits.json`: the sequence folders each probe was fit on and tested on, per fold."""
    return {task.key("linear", "")[:-1]: {
        "diagnostic": "/diagnostic_" in task.prefix,
        "folds": [{"fit": sorted(set(folders[f].tolist())), "test": sorted(set(folders[t].tolist()))}
                  for f, t in task.folds]} for task in tasks}
