"""Building a TactileVideoMAE from config values, and the sizes shipped in physiotouch/conf/model/."""

from __future__ import annotations

from typing import Any

import yaml

from physiotouch.paths import CONF_DIR
from physiotouch.utils.settings import build_settings

from .config import ModelConfig
from .mae import TactileVideoMAE


def build_model(**cfg: Any) -> TactileVideoMAE:
    """Model from config values; `encoder.init=clip` then loads the local CLIP weights. The `_target_` of every
    physiotouch/conf/model option: `hydra.utils.instantiate(cfg.model)` calls it, and so does PretrainModule on its
    saved plain hyper-parameters (a checkpoint's `_target_` is checked, never instantiated)."""
    model_cfg = build_settings(ModelConfig, cfg, "model")
    model = TactileVideoMAE(model_cfg)
    if model_cfg.encoder.init == "clip":
        from .clip_init import load_clip_into

        load_clip_into(model, model_cfg.encoder.clip_path, video_embed_from_2d=
                       model_cfg.encoder.video_embed_init == "clip_2d")
    return model


def named_model_configs() -> dict[str, ModelConfig]:
    """The sizes shipped in physiotouch/conf/model/ (used to recognise a reference checkpoint's size)."""
    out = {}
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        sizes = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "defaults"}  # the file as written
        out[path.stem] = build_settings(ModelConfig, sizes, f"model ({path.name})")
    return out

