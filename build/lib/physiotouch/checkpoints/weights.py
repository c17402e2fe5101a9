"""`init_from`: start a run from the weights of one of our checkpoints or of a reference best.pth / last.pth."""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from physiotouch.utils.safe_load import CheckpointError, safe_torch_load

from .format import load_checkpoint, model_state_from, require_same_model
from .reference import load_state_into

log = logging.getLogger(__name__)


def load_weights_into(model: nn.Module, path: str | Path) -> None:
    """The file's model weights into `model` (a TactileVideoMAE of the configured size); any mismatch is named."""
    raw = safe_torch_load(path, allow_namespace=True)
    if isinstance(raw, dict) and "state_dict" in raw:
        ckpt = load_checkpoint(path)
        require_same_model(ckpt["hyper_parameters"]["model_cfg"], model.cfg, f"init_from '{path}'")
        missing, unexpected = model.load_state_dict(model_state_from(ckpt), strict=False)
        if missing or unexpected:
            raise CheckpointError(f"init_from '{path}' does not fit model config: missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]}; pick the model=... it was trained with")
    elif isinstance(raw, dict) and isinstance(raw.get("model", raw), dict):
        load_state_into(model, raw.get("model", raw), str(path))
    else:
        raise CheckpointError(f"init_from '{path}' holds a {type(raw).__name__}, not a checkpoint (a physiotouch "
                              f".ckpt or a reference best.pth)")
    log.info("initial weights from %s", path)
