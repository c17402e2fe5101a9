"""Probes on frozen features: logistic regression and k-NN, scored with torchmetrics.

Which clips fit and which test each probe (the test split is never used here):
- sensor: fit on the train split's clips, tested on the validation split's (objects the probe never saw);
- object: train and validation objects are disjoint by design (object-group splits), so the object probe is fit on
  the early windows of every non-test sequence and tested on its late windows, with a gap of 4 frames so that no
  frame is shared between a fitting and a testing window;
- LoSO (leave one sensor out): the object probe fit on all sensors but one, tested on the held-out sensor.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassAveragePrecision,
    MulticlassCalibrationError,
    MulticlassF1Score,
)


@dataclass
class ProbeConfig:
    C: float = 1.0
    max_iter: int = 2000
    knn_k: int = 10
    ece_bins: int = 10
    time_split: float = 0.6  # object probe: windows ending before this fraction of a sequence fit, the rest test
    gap: int = 4


def fit_probe(kind: str, x_fit: np.ndarray, y_fit: np.ndarray, cfg: ProbeConfig):
    """A linear (logistic regression on standardised features) or k-NN probe, fitted."""
    if kind == "linear":
        model = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.C, max_iter=cfg.max_iter))
    else:
        model = KNeighborsClassifier(n_neighbors=min(cfg.knn_k, len(y_fit)), metric="cosine", weights="distance")
    return model.fit(x_fit, y_fit)


def predict_proba(model, x_test: np.ndarray, num_classes: int) -> np.ndarray:
    """-> class probabilities [n_test, num_classes] (classes absent from the fitting set get probability 0)."""
    proba = np.zeros((len(x_test), num_classes))
    proba[:, model.classes_] = model.predict_proba(x_test)
    return proba


def fit_predict(kind: str, x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, num_classes: int,
                cfg: ProbeConfig) -> np.ndarray:
    return predict_proba(fit_probe(kind, x_fit, y_fit, cfg), x_test, num_classes)


def classification_metrics(proba: np.ndarray, y: np.ndarray, num_classes: int, ece_bins: int = 10) -> dict[str, float]:
    """Accuracy, macro / micro F1, macro AUROC and AUPRC (over the classes present in y), ECE."""
    p, t = torch.as_tensor(proba, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    with warnings.catch_warnings():
        # Per-class scores of classes absent from y are undefined and torchmetrics warns about each; `_present`
        # averages over the classes that occur, so those scores are never used.
        warnings.filterwarnings("ignore", message="No positive samples in targets")
        return _metrics(p, t, y, num_classes, ece_bins)


def _metrics(p: torch.Tensor, t: torch.Tensor, y: np.ndarray, num_classes: int, ece_bins: int) -> dict[str, float]:
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


def time_split_mask(t: np.ndarray, start: np.ndarray, end: np.ndarray,
                    cfg: ProbeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Fit windows end before the cut; test windows start (t-3) at least `gap` frames after it."""
    cut = start + cfg.time_split * (end - start)
    return t < cut, (t - 3) >= cut + cfg.gap


def probe_tasks(feats: dict, test_feats: dict, vocab: dict, cfg: ProbeConfig) -> dict[str, tuple]:
    """Which clips fit and which test each probe (see the module docstring): task -> (x_fit, y_fit, x_test, y_test,
    number of classes). The tested clips' features come from `test_feats` (the same clips, perhaps perturbed)."""
    keys = ("x", "object", "sensor", "t", "start", "end")
    both = {k: np.concatenate([feats["train"][k], feats["val"][k]]) for k in keys}
    both_test = np.concatenate([test_feats["train"]["x"], test_feats["val"]["x"]])
    fit_t, test_t = time_split_mask(both["t"], both["start"], both["end"], cfg)
    return {
        "object": (both["x"][fit_t], both["object"][fit_t], both_test[test_t], both["object"][test_t],
                   len(vocab["object"])),
        "sensor": (feats["train"]["x"], feats["train"]["sensor"], test_feats["val"]["x"], feats["val"]["sensor"],
                   len(vocab["sensor"])),
    }


def loso_folds(sensors: np.ndarray, objects: np.ndarray, vocab: dict):
    """Leave one sensor out: (sensor name, mask of its clips) for every sensor whose clips can be tested by an
    object probe fitted on the other sensors' clips (at least two objects there)."""
    for s, sensor in enumerate(vocab["sensor"]):
        held = sensors == s
        if held.any() and not held.all() and len(np.unique(objects[~held])) >= 2:
            yield sensor, held


def run_probes(feats: dict, vocab: dict, cfg: ProbeConfig, test_feats: dict | None = None
               ) -> tuple[dict[str, float], dict]:
    """feats: `encoder.encode` results for 'train' and 'val'; test_feats: the same clips encoded otherwise
    (perturbed inputs), used in place of the tested clips' features. -> (flat metrics, curves for the plots)."""
    metrics, curves = {}, {}
    test_feats = test_feats or feats
    n_obj, n_sen = len(vocab["object"]), len(vocab["sensor"])
    both = {k: np.concatenate([feats["train"][k], feats["val"][k]]) for k in ("x", "object", "sensor")}
    both_test = np.concatenate([test_feats["train"]["x"], test_feats["val"]["x"]])
    tasks = probe_tasks(feats, test_feats, vocab, cfg)
    for task, (xf, yf, xt, yt, n) in tasks.items():
        metrics[f"val/probe_{task}_classes"] = float(len(np.unique(yt)))  # what chance is relative to
        for kind in ("linear", "knn"):
            if len(np.unique(yf)) < 2 or len(yt) == 0:
                continue
            proba = fit_predict(kind, xf, yf, xt, n, cfg)
            for name, value in classification_metrics(proba, yt, n, cfg.ece_bins).items():
                metrics[f"val/probe_{task}_{kind}_{name}" if kind == "knn" else f"val/probe_{task}_{name}"] = value
            if kind == "linear":
                curves[task] = {"proba": proba, "y": yt, "names": vocab[task]}
    for sensor, held in loso_folds(both["sensor"], both["object"], vocab):
        proba = fit_predict("linear", both["x"][~held], both["object"][~held], both_test[held], n_obj, cfg)
        m = classification_metrics(proba, both["object"][held], n_obj, cfg.ece_bins)
        metrics[f"val/loso_{sensor}_object_accuracy"] = m["accuracy"]
        metrics[f"val/loso_{sensor}_object_macro_f1"] = m["macro_f1"]
    loso = [v for k, v in metrics.items() if k.startswith("val/loso_") and k.endswith("_accuracy")]
    if loso:
        metrics["val/loso_mean_object_accuracy"] = float(np.mean(loso))
        if "val/probe_object_accuracy" in metrics:  # the roadmap's LoSO drop (in points)
            metrics["val/loso_drop_points"] = 100 * (metrics["val/probe_object_accuracy"] - float(np.mean(loso)))
    metrics["val/probe_sensor_chance"] = 1.0 / n_sen
    metrics["val/probe_object_chance"] = 1.0 / n_obj
    return metrics, curves
