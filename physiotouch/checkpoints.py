"""Our checkpoint files: Lightning's `.ckpt` dict, read safely, plus a few helpers around it.

A physiotouch checkpoint is a dict with `state_dict` (the LightningModule's, model weights under `model.`)
and `hyper_parameters` holding plain values only (`model_cfg`, `loss_cfg`, ...), so that it loads with
`torch.load(weights_only=True)`. `python -m physiotouch.legacy convert` writes the same layout.
"""

from __future__ import annotations

from pathlib import Path

import torch

from physiotouch.models import ModelConfig, TactileVideoMAE
from physiotouch.utils.files import atomic_write
from physiotouch.utils.safe_load import CheckpointError, safe_torch_load

FORMAT = "physiotouch-ckpt-1"


def atomic_torch_save(obj, path: str | Path) -> None:
    """torch.save through a temporary file and a rename: a kill never leaves half a checkpoint."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def model_state_from(ckpt: dict) -> dict[str, torch.Tensor]:
    state = ckpt["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def load_checkpoint(path: str | Path) -> dict:
    """Read one of our checkpoints (training `.ckpt` or a converted reference one), refusing anything else."""
    ckpt = safe_torch_load(path, allow_namespace=True)  # the Namespace only so a reference file gets a hint
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "model_cfg" not in ckpt.get("hyper_parameters", {}):
        hint = (" It looks like a reference checkpoint: convert it first with "
                f"`python -m physiotouch.legacy convert {path} NEW.ckpt`."
                if isinstance(ckpt, dict) and "model" in ckpt else "")
        raise CheckpointError(f"'{path}' is not a physiotouch checkpoint (no state_dict / model_cfg).{hint}")
    return ckpt


def load_model(path: str | Path) -> tuple[TactileVideoMAE, dict]:
    """-> (model with the checkpoint's weights, the checkpoint dict)."""
    ckpt = load_checkpoint(path)
    cfg = ModelConfig.from_dict(ckpt["hyper_parameters"]["model_cfg"])
    cfg.encoder.init, cfg.encoder.clip_path = "random", None  # the weights come from the file
    model = TactileVideoMAE(cfg)
    missing, unexpected = model.load_state_dict(model_state_from(ckpt), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"'{path}' does not fit its own model config: missing {missing[:6]}, "
                              f"unexpected {unexpected[:6]}")
    return model, ckpt
