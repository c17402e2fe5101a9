"""TactileVideoMAE and its builders. `build_model` is the `_target_` of `conf/model/*.yaml`."""

from __future__ import annotations

from typing import Any

from .config import DecoderConfig, EncoderConfig, ModelConfig
from .mae import NUM_FRAMES, TactileVideoMAE

__all__ = ["DecoderConfig", "EncoderConfig", "ModelConfig", "TactileVideoMAE", "NUM_FRAMES", "build_model",
           "named_model_configs"]


def build_model(**cfg: Any) -> TactileVideoMAE:
    """Model from config values; `encoder.init=clip` then loads the local CLIP weights."""
    model_cfg = ModelConfig.from_dict(_plain(cfg))
    model = TactileVideoMAE(model_cfg)
    if model_cfg.encoder.init == "clip":
        from .clip_init import load_clip_into

        load_clip_into(model, model_cfg.encoder.clip_path, video_embed_from_2d=
                       model_cfg.encoder.video_embed_init == "clip_2d")
    return model


def named_model_configs() -> dict[str, ModelConfig]:
    """The sizes shipped in conf/model/ (used to recognise a reference checkpoint's size)."""
    import yaml

    from physiotouch.paths import CONF_DIR

    out = {}
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        out[path.stem] = ModelConfig.from_dict(yaml.safe_load(path.read_text()))
    return out


def _plain(cfg: Any) -> Any:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(cfg, dict):
        return {k: _plain(v) for k, v in cfg.items()}
    return cfg
