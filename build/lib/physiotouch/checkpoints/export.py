"""The safetensors copy of a model: weights only, with the model config as metadata (loads without pickle)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from physiotouch.models import TactileVideoMAE


def export_safetensors(model: TactileVideoMAE, path: Path) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"model_cfg": json.dumps(model.cfg.to_dict())})
