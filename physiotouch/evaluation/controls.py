"""Controls beside every probe number: the same probe, fitted and tested on the same clips, with
- `raw_pixels`: the clip itself, each frame average-pooled to 8×8 (4 frames × 3 colours × 64 = 768 values);
- `untrained`: a network of the same architecture with fresh weights (seeded), encoded like the trained one;
- `majority`: the fitting set's most frequent class, predicted for every tested clip.
A probe score means something only where it beats all three; the report flags every one that does not.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from physiotouch.models import TactileVideoMAE

from .encoder import encode
from .probes import ProbeConfig, classification_metrics, loso_folds, probe_tasks, run_probes

CONTROLS = ("raw_pixels", "untrained", "majority")
RAW_SIDE = 8


class RawPixels(nn.Module):
    """Stands in for a model in `encode`: features = the normalised clip, average-pooled per frame."""

    def encode(self, clips: torch.Tensor, path: str = "video") -> torch.Tensor:
        frames = clips.flatten(0, 1)  # [B·4, 3, S, S]
        return F.adaptive_avg_pool2d(frames, RAW_SIDE).reshape(clips.shape[0], -1)


def majority_metrics(feats: dict, vocab: dict, pcfg: ProbeConfig) -> dict[str, float]:
    """The majority-class predictor on every probe task (its probabilities one-hot), scored like a probe."""
    out = {}
    for task, (_, y_fit, _, y_test, n) in probe_tasks(feats, feats, vocab, pcfg).items():
        if len(y_test) and len(y_fit):
            out.update({f"val/probe_{task}_{k}": v for k, v in _one_hot_scores(y_fit, y_test, n, pcfg).items()})
    objects = np.concatenate([feats["train"]["object"], feats["val"]["object"]])
    sensors = np.concatenate([feats["train"]["sensor"], feats["val"]["sensor"]])
    for sensor, held in loso_folds(sensors, objects, vocab):  # leave one sensor out, as the probe does
        scores = _one_hot_scores(objects[~held], objects[held], len(vocab["object"]), pcfg)
        out[f"val/loso_{sensor}_object_accuracy"] = scores["accuracy"]
        out[f"val/loso_{sensor}_object_macro_f1"] = scores["macro_f1"]
    return out


def _one_hot_scores(y_fit: np.ndarray, y_test: np.ndarray, n: int, pcfg: ProbeConfig) -> dict[str, float]:
    proba = np.zeros((len(y_test), n))
    proba[:, np.bincount(y_fit, minlength=n).argmax()] = 1.0
    return classification_metrics(proba, y_test, n, pcfg.ece_bins)


def control_metrics(model: TactileVideoMAE, datasets: dict, feats: dict, vocab: dict, pcfg: ProbeConfig,
                    batch_size: int, device: str, limit: int | None, seed: int) -> dict[str, dict[str, float]]:
    """-> {control: flat probe metrics}, each control's probes fitted and tested on exactly the model's clips."""
    torch.manual_seed(seed)
    fresh = TactileVideoMAE(model.cfg)
    out = {}
    for name, network in (("raw_pixels", RawPixels()), ("untrained", fresh)):
        encoded = {s: encode(network, datasets[s], batch_size, 0.75, errors=False, device=device, limit=limit,
                             name=f"{s}:{name}") for s in ("train", "val")}
        out[name] = run_probes(encoded, vocab, pcfg)[0]
    out["majority"] = majority_metrics(feats, vocab, pcfg)
    return out


def controls_for(metrics: dict[str, float], controls: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Per probe score of the model: each control's value on the same metric, and whether the model beats them
    all (lower is better only for ECE)."""
    out = {}
    for key, value in metrics.items():
        if not key.startswith(("val/probe_", "val/loso_")) or key.endswith(("_classes", "_chance", "_points")) \
                or "mean" in key:
            continue
        # The majority class is the same predictor whatever the probe (linear or k-NN) it stands beside.
        row = {name: controls[name].get(key.replace("_knn_", "_") if name == "majority" else key)
               for name in CONTROLS}
        known = [v for v in row.values() if v is not None]
        lower_better = key.endswith("_ece")
        row["beats_controls"] = bool(known) and all((value < v) if lower_better else (value > v) for v in known)
        out[key] = row
    return out
