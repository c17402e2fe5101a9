"""Controls beside every probe number: the same probe, fitted and tested on the same clips, with
- `raw_pixels`: the frames the encoder sees (1-3; frame 4 is what the model predicts), each average-pooled to 8×8
  (3 frames × 3 colours × 64 = 576 values);
- `pixel_change`: how much each of those pooled pixels changes between consecutive frames (|frame t+1 − frame t|,
  384 values), a hand-made motion-energy feature: raw pixels cannot tell motions apart with a linear probe (the
  direction of a slide or a rotation varies, its magnitude does not), so a dynamic attribute needs this control too;
- `untrained`: a network of the same architecture with fresh weights (seeded), encoded like the trained one;
- `contact_features`: hand-made contact features of the same frames, the sensor's background removed
  (contact_features.py): the ceiling a representation should approach;
- `majority`: the fitting set's most frequent class (for a regression: its mean), predicted for every tested clip.
Each control's probes are tuned like the model's (their own C, α and k chosen by inner cross-validation).
Each probe score stands beside every control with a verdict over objects (verdicts.py): a score means something
only where it is `better` than the controls, with an interval that excludes zero.
"""

from __future__ import annotations

import queue
from typing import Iterator

import numpy as np
import torch
from torch import nn

from physiotouch.models import TactileVideoMAE
from physiotouch.models.mae import NUM_INPUT_FRAMES
from physiotouch.utils.progress import progress_row
from physiotouch.utils.timing import PhaseTimer

from .contact_features import SIDE, contact_features, pooled_frames
from .encoder import encode
from .fit_worker import FitWorker
from .logistic import GATHER_CLASSES
from .probe_cache import ProbeCache
from .probes import ProbeConfig, Task, pool, run_probes, task_metrics
from .settings import ECE_BINS
from .verdicts import paired, per_object

CONTROLS = ("raw_pixels", "pixel_change", "untrained", "contact_features", "majority")
RAW_SIDE = 8
NUM_RAW = NUM_INPUT_FRAMES * 3 * RAW_SIDE * RAW_SIDE  # raw pixels' values per clip (576)


class RawPixels(nn.Module):
    """Stands in for a model in `encode`: features = the frames the encoder sees, normalised, average-pooled to
    RAW_SIDE×RAW_SIDE; `contact=True` appends the contact control's SIDE×SIDE frames, so that one pass over the
    clips feeds the three pixel controls (raw pixels, pixel change, contact features)."""

    def __init__(self, contact: bool = False):
        super().__init__()
        self.contact = contact

    def encode(self, clips: torch.Tensor, path: str = "video") -> torch.Tensor:
        raw = pooled_frames(clips, RAW_SIDE)
        return torch.cat([raw, pooled_frames(clips, SIDE)], 1) if self.contact else raw


def pixel_pass_features(encoded: dict) -> tuple[np.ndarray, np.ndarray]:
    """The pixel pass (`RawPixels(contact=True)`, pooled) -> (raw pixels [N, NUM_RAW], contact features [N, 48])."""
    x = encoded["x"]
    first = encoded["t"] - NUM_INPUT_FRAMES == encoded["start"]  # windows that start their recording
    return x[:, :NUM_RAW], contact_features(x[:, NUM_RAW:], encoded["sensor"], first)


def pixel_change(raw: np.ndarray) -> np.ndarray:
    """RawPixels features [N, 3·3·64] -> |consecutive frame differences| [N, 2·3·64]."""
    frames = raw.reshape(len(raw), NUM_INPUT_FRAMES, -1)
    return np.abs(np.diff(frames, axis=1)).reshape(len(raw), -1)


def majority_predictions(tasks: list[Task]) -> dict[str, np.ndarray]:
    """The majority class (its probabilities one-hot) or, for a regression, the mean of each fold's fitting
    targets, predicted for every tested clip: {probe key: predictions over the task's tested clips}."""
    out = {}
    for task in tasks:
        preds = []
        for f, t in task.folds:
            if task.classes is None:
                preds.append(np.full(len(t), task.y[f].mean()))
            else:
                one_hot = np.zeros((len(t), len(task.classes)))
                one_hot[:, np.bincount(task.y[f], minlength=len(task.classes)).argmax()] = 1.0
                preds.append(one_hot)
        pred = np.concatenate(preds)
        for kind in task.kinds:  # the same predictor whatever probe it stands beside
            out[task.key(kind, "")] = pred
    return out


def majority_metrics(tasks: list[Task], pcfg: ProbeConfig, preds: dict | None = None) -> dict[str, float]:
    preds = preds or majority_predictions(tasks)
    return {task.key(kind, k): v for task in tasks for kind in task.kinds
            for k, v in task_metrics(task, preds[task.key(kind, "")], pcfg).items()}


def control_features(model: TactileVideoMAE, datasets: dict, batch_size: int, device: str, limit: int | None,
                     seed: int, splits: tuple[str, str] = ("train", "val")) -> dict[str, np.ndarray]:
    """Each control's features on exactly the model's clips (`splits` of `datasets`, pooled in that order, as the
    model's were), from two passes: the pixel pass (raw pixels, their changes, the contact features) and an
    untrained network of the same shape (seeded)."""
    torch.manual_seed(seed)
    fresh = TactileVideoMAE(model.cfg)
    out = {}
    for name, network in (("raw_pixels", RawPixels(contact=True)), ("untrained", fresh)):
        encoded = pool({s: encode(network, datasets[s], batch_size, 0.75, errors=False, device=device, limit=limit,
                                  name=f"{s}:{name}") for s in splits}, splits)
        if name == "raw_pixels":
            out["raw_pixels"], out["contact_features"] = pixel_pass_features(encoded)
            out["pixel_change"] = pixel_change(out["raw_pixels"])
        else:
            out[name] = encoded["x"]
    return {name: out[name] for name in CONTROLS if name in out}


def control_work(features: dict[str, np.ndarray], tasks: list[Task]) -> queue.SimpleQueue:
    """The controls' probes as units of work for `fit_controls`, the costliest first: per control (the most features
    first), its many-class tasks (the object and leave-one-sensor-out probes: most of a pixel control's fits) and its
    other tasks. Two threads share the units (evaluation/run.py); a control as one unit left one thread fitting the
    last control alone for seconds. Each task is fit in one unit: the results are the same as in one."""
    many, other = [], []
    for task in tasks:
        (many if task.classes is not None and len(task.classes) >= GATHER_CLASSES else other).append(task)
    parts = [part for part in (many, other) if part]
    return queued((name, i, part) for name in sorted(features, key=lambda n: -features[n].shape[1])
                  for i, part in enumerate(parts))


def fit_controls(pending: queue.SimpleQueue, features: dict[str, np.ndarray], pcfg: ProbeConfig,
                 cache: ProbeCache | None, timer: PhaseTimer, results: dict, worker: FitWorker | None = None) -> None:
    """Fits the units of `control_work` in `pending` until none is left (or reads them from `cache`), into `results`
    {(control, part): (metrics, choices, predictions)}, here or in `worker`'s process. Several threads may empty
    the same queue (evaluation/run.py)."""
    for name, i, tasks in drain(pending):
        with timer.phase(f"control {name}"):
            entry, hit = cache.lookup(name, features[name], tasks, pcfg) if cache else (None, None)
            if hit is None:
                preds: dict = {}
                if worker is None:
                    metrics, _, choices = run_probes(tasks, features[name], pcfg, name, predictions=preds)
                else:
                    with progress_row(f"probes ({name}, second process)", 1) as advance:
                        metrics, _, choices = worker.run_probes(tasks, features[name], pcfg, name, predictions=preds)
                        advance()
                hit = metrics, choices, preds
                if cache:
                    cache.store(entry, *hit)
            results[(name, i)] = hit


def queued(items) -> queue.SimpleQueue:
    pending: queue.SimpleQueue = queue.SimpleQueue()
    for item in items:
        pending.put(item)
    return pending


def drain(pending: queue.SimpleQueue) -> Iterator:
    """The items in `pending`, each taken once, until none is left (another thread may take some of them)."""
    while True:
        try:
            yield pending.get_nowait()
        except queue.Empty:
            return


def discard(pending: queue.SimpleQueue) -> None:
    """Empties `pending`: the controls not yet being fitted will not be."""
    for _ in drain(pending):
        pass


def control_results(fitted: dict, tasks: list[Task], pcfg: ProbeConfig
                    ) -> tuple[dict[str, dict[str, float]], dict[str, dict], dict[str, dict]]:
    """`fit_controls`' results and the majority class -> ({control: flat probe metrics}, {control: the
    regularisation each probe chose}, {control: each probe's predictions}), in CONTROLS' order, each control's parts
    in their order."""
    merged: dict[str, tuple[dict, dict, dict]] = {}
    for name, i in sorted(fitted, key=lambda key: (CONTROLS.index(key[0]), key[1])):
        for into, part in zip(merged.setdefault(name, ({}, {}, {})), fitted[(name, i)]):
            into.update(part)
    order = [task.key(kind, "")[:-1] for task in tasks for kind in task.kinds]  # run_probes' order over all tasks
    out, choices, preds = ({name: m[j] for name, m in merged.items()} for j in range(3))
    choices = {name: {k: c[k] for k in order if k in c} for name, c in choices.items()}
    preds["majority"] = majority_predictions(tasks)
    out["majority"] = majority_metrics(tasks, pcfg, preds["majority"])
    return out, choices, preds


def control_metrics(model: TactileVideoMAE, datasets: dict, tasks: list[Task], pcfg: ProbeConfig,
                    batch_size: int, device: str, limit: int | None, seed: int, timer: PhaseTimer | None = None,
                    splits: tuple[str, str] = ("train", "val"), cache: ProbeCache | None = None
                    ) -> tuple[dict[str, dict[str, float]], dict[str, dict], dict[str, dict]]:
    """Every control's probes, one after the other: `control_features`, `fit_controls`, `control_results`.
    `timer` times the controls' passes and each control's probes; `cache`: where a control's probe results are read
    back from when its features and tasks are the same (probe_cache.py)."""
    timer = timer or PhaseTimer()
    with timer.phase("encode controls"):
        features = control_features(model, datasets, batch_size, device, limit, seed, splits)
    fitted: dict = {}
    fit_controls(control_work(features, tasks), features, pcfg, cache, timer, fitted)
    with timer.phase("control majority"):
        return control_results(fitted, tasks, pcfg)


def controls_for(metrics: dict[str, float], controls: dict[str, dict[str, float]], tasks: list[Task],
                 model_preds: dict, control_preds: dict[str, dict], objects: np.ndarray, ece_bins: int = ECE_BINS
                 ) -> dict[str, dict]:
    """Per probe score of the model: each control's value on the same metric, the paired per-object difference
    (model − control) with its 95% interval and verdict (verdicts.py), and `better_than_all`: whether every
    control's verdict is `better`. The controls are whatever `control_preds` names (CONTROLS in the evaluation;
    any representations in the instrument's test), each with its flat metrics in `controls`."""
    out = {}
    for task in tasks:
        if not task.prefix.endswith(("/probe_", "/loso_")):
            continue  # the re-identification diagnostic (val/diagnostic_*) is not a representation number
        y, tested = task.y[task.tested], objects[task.tested]
        for kind in task.kinds:
            head = task.key(kind, "")
            for key in [k for k in metrics if k.startswith(head) and k[len(head):] in PAIRED_METRICS]:
                metric = key[len(head):]
                mine = per_object(metric, y, model_preds[head], tested, ece_bins)
                row = {name: {"value": controls[name].get(key),
                              **paired(mine, per_object(metric, y, preds[head], tested, ece_bins), metric, len(y))}
                       for name, preds in control_preds.items() if head in preds}
                row["better_than_all"] = bool(row) and all(c["verdict"] == "better" for c in row.values())
                out[key] = row
    return out


PAIRED_METRICS = ("accuracy", "macro_f1", "micro_f1", "macro_auroc", "macro_auprc", "ece", "r2", "mae")
