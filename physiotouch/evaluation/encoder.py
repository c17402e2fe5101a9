"""Encoding a split for evaluation through Lightning's `Trainer.predict`: the configured device and precision,
one pass per (split, perturbation, strength), and a progress bar with counts and rate.

Each pass gives the unmasked features (`x`, what the probes read) and, where asked, the per-clip reconstruction
errors under the fixed validation masks (`features.per_clip_errors`). Passes are counted in `PASSES` so that a
test can check that nothing is encoded twice.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections import Counter
from typing import Callable

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from physiotouch.data.augment import normalize, to_float_clips
from physiotouch.data.datamodule import ClipDataset
from physiotouch.models import TactileVideoMAE

PASSES: Counter = Counter()  # (split name, perturbation name) -> passes, for tests and logs


class ClipEncoder(L.LightningModule):
    """Wraps a trained model for `predict`: a batch of uint8 clips -> features (and per-clip errors)."""

    def __init__(self, model: TactileVideoMAE, mask_ratio: float, errors: bool,
                 perturb: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.model, self.mask_ratio, self.errors, self.perturb = model, mask_ratio, errors, perturb

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, np.ndarray]:
        from .features import per_clip_errors

        clips = to_float_clips(batch["clip"])
        if self.perturb is not None:
            clips = self.perturb(clips, batch["clip_id"].cpu())
        clips = normalize(clips)
        values = {"x": self.model.encode(clips, "video")}
        if self.errors:
            noise = self.model.fixed_mask_noise(batch["clip_id"].cpu(), self.model.num_patches).to(clips.device)
            out = self.model.forward_video(clips, noise, mask_ratio=self.mask_ratio)
            values.update(per_clip_errors(self.model, clips, out))
        result = {k: v.float().cpu().numpy() for k, v in values.items()}
        result.update({k: batch[k].cpu().numpy() for k in ("object", "sensor", "clip_id", "index")})
        return result


def resolve_device(device: str) -> tuple[str, str]:
    """`eval.device` (auto, cpu, cuda) -> (Lightning accelerator, precision): bf16-mixed on CUDA, 32-true on CPU."""
    cuda = torch.cuda.is_available() and device in ("auto", "cuda", "gpu")
    if not cuda:
        return "cpu", "32-true"
    return "gpu", "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


@functools.cache
def _trainer(accelerator: str, precision: str) -> L.Trainer:
    """One predict Trainer per device and precision, reused by every pass (setting one up costs more than a small
    split's encoding)."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)  # no banner per pass
    show = sys.stderr.isatty() or os.environ.get("PHYSIOTOUCH_PROGRESS") == "1"
    return L.Trainer(accelerator=accelerator, devices=1, precision=precision, logger=False, enable_checkpointing=False,
                     enable_model_summary=False, enable_progress_bar=show)


@torch.no_grad()
def encode(model: TactileVideoMAE, ds: ClipDataset | Subset, batch_size: int, mask_ratio: float, *, errors: bool = True,
           perturb=None, device: str = "auto", limit: int | None = None, name: str = "split",
           precision: str | None = None) -> dict:
    """-> {'x': features [N, P], 'object', 'sensor', 't', 'start', 'end', 'clip_id', 'index', 'folder',
    'object_name', 'sensor_name'[, per-clip errors]}."""
    PASSES[(name, getattr(perturb, "label", "clean"))] += 1
    accelerator, auto_precision = resolve_device(device)
    if limit and limit < len(ds):
        ds = Subset(ds, range(limit))
    if len(ds) == 0:  # nothing to encode (e.g. no window late enough to test): counted, but nothing runs
        return {"x": np.zeros((0, 0), np.float32), "index": np.zeros(0, np.int64)}
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0, pin_memory=accelerator == "gpu")
    model.eval()
    parts = _trainer(accelerator, precision or auto_precision).predict(
        ClipEncoder(model, mask_ratio, errors, perturb), dataloaders=loader)
    model.cpu()
    result = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    base = ds.dataset if isinstance(ds, Subset) else ds  # a Subset's items carry the base dataset's index
    seqs = [base.sequences[int(base.windows.seq[i])] for i in result["index"]]
    result["t"] = base.windows.t[result["index"]]
    result["start"] = np.array([s.start for s in seqs])
    result["end"] = np.array([s.end for s in seqs])
    result["object_name"] = np.array([s.object for s in seqs])
    result["sensor_name"] = np.array([s.sensor for s in seqs])
    result["folder"] = np.array([s.folder for s in seqs])
    return result
