"""TactileVideoMAE (mae.py), its sizes (config.py) and how it is built from config values (build.py)."""

from .build import build_model, named_model_configs
from .config import DecoderConfig, EncoderConfig, ModelConfig
from .mae import NUM_FRAMES, TactileVideoMAE

__all__ = ["DecoderConfig", "EncoderConfig", "ModelConfig", "TactileVideoMAE", "NUM_FRAMES", "build_model",
           "named_model_configs"]
