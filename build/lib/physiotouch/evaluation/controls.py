"""Controls beside every probe number: the same probe, fitted and tested on the same clips, with
- `raw_pixels`: the frames the encoder sees (1-3; frame 4 is what the model predicts), each average-pooled to 8×8
  (3 frames × 3 colours × 64 = 576 values);
- `pixel_change`: how much each of those pooled pixels changes between consecutive frames (|frame t+1 − frame t|,
  384 values), a hand-made motion-energy feature: raw pixels cannot tell motions apart with a linear probe (the
  direction of a slide or a rotation varies, its magnitude does not), so a dynamic attribute needs this control too;
- `untrained`: a network of the same architecture with fresh weights (seeded), encoded like the trained one;
- `majority`: the fitting set's most frequent class (for a regression: its mean), predicted for every tested clip.
Each control's probes are tuned like the model's (their own C, α and k chosen by inner cross-validation).
A probe score means something only where it beats all three; the report flags every one that does not.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from physiotouch.models import TactileVideoMAE
from physiotouch.models.mae import NUM_INPUT_FRAMES
from physiotouch.utils.timing import PhaseTimer

from .encoder import encode
from .probes import ProbeConfig, Task, pool, run_probes, task_metrics

CONTROLS = ("raw_pixels", "pixel_change", "untrained", "majority")
RAW_SIDE = 8


class RawPixels(nn.Module):
    """Stands in for a model in `encode`: features = the frames the encoder sees, normalised, average-pooled."""

    def encode(self, clips: torch.Tensor, path: str = "video") -> torch.Tensor:
        frames = clips[:, :NUM_INPUT_FRAMES].flatten(0, 1)  # [B·3, 3, S, S]
        return F.adaptive_avg_pool2d(frames, RAW_SIDE).reshape(clips.shape[0], -1)


def pixel_change(raw: np.ndarray) -> np.ndarray:
    """RawPixels features [N, 3·3·64] -> |consecutive frame differences| [N, 2·3·64]."""
    frames = raw.reshape(len(raw), NUM_INPUT_FRAMES, -1)
    return np.abs(np.diff(frames, axis=1)).reshape(len(raw), -1)


def majority_metrics(tasks: list[Task], pcfg: ProbeConfig) -> dict[str, float]:
    """The majority class (its probabilities one-hot) or, for a regression, the mean of each fold's fitting
    targets, predicted for every tested clip and scored like a probe."""
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
        out.update({task.key("linear", k): v for k, v in task_metrics(task, np.concatenate(preds), pcfg).items()})
    return out


def control_metrics(model: TactileVideoMAE, datasets: dict, tasks: list[Task], pcfg: ProbeConfig,
                    batch_size: int, device: str, limit: int | None, seed: int, timer: PhaseTimer | None = None
                    ) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
    """-> ({control: flat probe metrics}, {control: the regularisation each probe chose}), each control's probes
    fitted and tested on exactly the model's clips; `timer` times each control (its encoding and its probes)."""
    timer = timer or PhaseTimer()
    torch.manual_seed(seed)
    fresh = TactileVideoMAE(model.cfg)
    out, choices = {}, {}
    for name, network in (("raw_pixels", RawPixels()), ("untrained", fresh)):
        with timer.phase(f"control {name}"):
            encoded = {s: encode(network, datasets[s], batch_size, 0.75, errors=False, device=device, limit=limit,
                                 name=f"{s}:{name}") for s in ("train", "val")}
            x = pool(encoded)["x"]
            out[name], _, choices[name] = run_probes(tasks, x, pcfg, name)
        if name == "raw_pixels":  # from the same pass: the pooled frames' changes
            with timer.phase("control pixel_change"):
                out["pixel_change"], _, choices["pixel_change"] = run_probes(tasks, pixel_change(x), pcfg,
                                                                             "pixel_change")
    with timer.phase("control majority"):
        out["majority"] = majority_metrics(tasks, pcfg)
    return out, choices


def controls_for(metrics: dict[str, float], controls: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Per probe score of the model: each control's value on the same metric, and whether the model beats them
    all (lower is better only for ECE)."""
    out = {}
    for key, value in metrics.items():
        if not key.startswith(("val/probe_", "val/loso_")) or key.endswith(("_classes", "_chance", "_points")) \
                or "mean" in key:
            continue  # the re-identification diagnostic (val/diagnostic_*) is not a representation number
        # The majority class is the same predictor whatever the probe (linear or k-NN) it stands beside.
        row = {name: controls[name].get(key.replace("_knn_", "_") if name == "majority" else key)
               for name in CONTROLS}
        known = [v for v in row.values() if v is not None]
        lower_better = key.endswith(("_ece", "_mae"))
        row["beats_controls"] = bool(known) and all((value < v) if lower_better else (value > v) for v in known)
        out[key] = row
    return out
