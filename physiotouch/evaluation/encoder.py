"""Encoding a split for evaluation through Lightning's `Trainer.predict`: the configured device and precision,
one pass per split for all its perturbations, and a progress bar with counts and rate.

Each pass gives the unmasked features (`x`, what the probes read) and, where asked, the per-clip reconstruction
errors under the fixed validation masks (`errors=True`: `features.per_clip_errors`; `errors="objective"`: the
objective alone, `features.per_clip_objective`). Passes are counted in `PASSES` so that a
test can check that nothing is encoded twice.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from contextlib import ExitStack

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from physiotouch.data.augment import normalize, to_float_clips
from physiotouch.data.datamodule import ClipDataset
from physiotouch.models import TactileVideoMAE
from physiotouch.models.mae import NUM_INPUT_FRAMES
from physiotouch.utils.devices import auto_precision, uses_cuda
from physiotouch.utils.progress import progress_row

PASSES: Counter = Counter()  # (split name, perturbation name) -> passes, for tests and logs


class ClipEncoder(L.LightningModule):
    """Wraps a trained model for `predict`: a batch of uint8 clips -> features (and per-clip errors), once per
    perturbation (None: the clean clips). Each batch is loaded once for all of them."""

    def __init__(self, model: TactileVideoMAE, mask_ratio: float, errors: bool | str, perturbations: list,
                 description: str = "encoding"):
        super().__init__()
        self.model, self.mask_ratio, self.errors, self.perturbations = model, mask_ratio, errors, perturbations
        self.description = description  # the progress row's (_EncodeProgress)

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, dict[str, np.ndarray]]:
        from .features import per_clip_errors, per_clip_objective

        clean = to_float_clips(batch["clip"])
        if not self.errors:  # the features read frames 1-3 only; frame 4 is the errors' target
            clean = clean[:, :NUM_INPUT_FRAMES]
        normed = normalize(clean)
        ids = batch["clip_id"].cpu()
        # the fixed validation masks depend on the clip only: one draw for every perturbation
        masks = self.model.fixed_mask_noise(ids, self.model.num_patches).to(clean.device) if self.errors else None
        shared: dict = {}  # per-clip draws the perturbations of this batch share (e.g. one noise image per clip)
        labels = {k: batch[k].cpu().numpy() for k in ("object", "sensor", "clip_id", "index")}
        out = {}
        for perturb in self.perturbations:
            if perturb is None:
                clips = normed
            elif perturb.commutes_with_normalize:  # a map whose weights sum to 1: normalised once, beforehand
                clips = perturb(normed, ids, shared)
            else:
                clips = normalize(perturb(clean, ids, shared))
            if not self.errors:  # `encode` alone: the controls' stand-ins (controls.RawPixels) have nothing else
                values = {"x": self.model.encode(clips, "video")}
            else:  # the unmasked features and the masked pass from one tube embedding
                tokens = self.model.embed_video(clips)
                values = {"x": self.model.encode_tokens(tokens)}
                out_video = self.model.forward_video(clips, masks, mask_ratio=self.mask_ratio, tokens=tokens)
                values.update(per_clip_objective(self.model, out_video) if self.errors == "objective" else
                              per_clip_errors(self.model, out_video))
            out[_label(perturb)] = {**{k: v.float().cpu().numpy() for k, v in values.items()}, **labels}
        return out


def _label(perturb) -> str:
    return "clean" if perturb is None else perturb.label


def resolve_device(device: str) -> tuple[str, str]:
    """`eval.device` (auto, cpu, cuda) -> (Lightning accelerator, precision): bf16-mixed on CUDA, 32-true on CPU."""
    return ("gpu" if uses_cuda(device) else "cpu"), auto_precision(device)


class _EncodeProgress(L.Callback):
    """The encoding's progress as a row of physiotouch's progress display (utils/progress.py) rather than Lightning's
    own bar: the evaluation encodes while its second thread fits probes and shows their rows in the same display."""

    def __init__(self) -> None:
        self._rows = ExitStack()
        self._advance = None

    def on_predict_start(self, trainer, pl_module: ClipEncoder) -> None:
        total = int(sum(trainer.num_predict_batches))
        self._advance = self._rows.enter_context(progress_row(pl_module.description, total))

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._advance()

    def on_predict_end(self, trainer, pl_module) -> None:
        self._rows.close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._rows.close()


@functools.cache
def _trainer(accelerator: str, precision: str) -> L.Trainer:
    """One predict Trainer per device and precision, reused by every pass (setting one up costs more than a small
    split's encoding)."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)  # no banner per pass
    return L.Trainer(accelerator=accelerator, devices=1, precision=precision, logger=False, enable_checkpointing=False,
                     enable_model_summary=False, enable_progress_bar=False, callbacks=[_EncodeProgress()])


@torch.no_grad()
def encode(model: TactileVideoMAE, ds: ClipDataset | Subset, batch_size: int, mask_ratio: float, *,
           errors: bool | str = True, perturb=None, device: str = "auto", limit: int | None = None, name: str = "split",
           precision: str | None = None) -> dict:
    """-> {'x': features [N, P], 'object', 'sensor', 't', 'start', 'end', 'clip_id', 'index', 'folder',
    'object_name', 'sensor_name'[, per-clip errors]}."""
    return encode_each(model, ds, batch_size, mask_ratio, [perturb], errors=errors, device=device, limit=limit,
                       name=name, precision=precision)[_label(perturb)]


@torch.no_grad()
def encode_each(model: TactileVideoMAE, ds: ClipDataset | Subset, batch_size: int, mask_ratio: float,
                perturbations: list, *, errors: bool | str = True, device: str = "auto", limit: int | None = None,
                name: str = "split", precision: str | None = None) -> dict[str, dict]:
    """`encode` under each perturbation (None: clean) in one pass over `ds` -> {perturbation label: features}."""
    for perturb in perturbations:
        PASSES[(name, _label(perturb))] += 1
    accelerator, device_precision = resolve_device(device)
    if limit and limit < len(ds):
        ds = Subset(ds, range(limit))
    if len(ds) == 0:  # nothing to encode (e.g. no window late enough to test): counted, but nothing runs
        return {_label(p): {"x": np.zeros((0, 0), np.float32), "index": np.zeros(0, np.int64)} for p in perturbations}
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0, pin_memory=accelerator == "gpu")
    model.eval()
    trainer = _trainer(accelerator, precision or device_precision)
    description = f"encoding {name}" + (f" ({n} perturbations)" if (n := sum(p is not None for p in perturbations))
                                        else "")
    parts = trainer.predict(ClipEncoder(model, mask_ratio, errors, perturbations, description), dataloaders=loader)
    model.cpu()
    base = ds.dataset if isinstance(ds, Subset) else ds  # a Subset's items carry the base dataset's index
    out = {}
    for label in parts[0]:
        result = {k: np.concatenate([p[label][k] for p in parts]) for k in parts[0][label]}
        seqs = [base.sequences[int(base.windows.seq[i])] for i in result["index"]]
        result["t"] = base.windows.t[result["index"]]
        result["start"] = np.array([s.start for s in seqs])
        result["end"] = np.array([s.end for s in seqs])
        result["object_name"] = np.array([s.object for s in seqs])
        result["sensor_name"] = np.array([s.sensor for s in seqs])
        result["folder"] = np.array([s.folder for s in seqs])
        out[label] = result
    return out
