"""TactileVideoMAE (mae.py), its sizes (config.py) and how it is built from config values (build.py).

The names below load on first use (PEP 562), so that the sizes (config.py, torch-free) can be read without torch.
"""

from __future__ import annotations

from physiotouch.utils.lazy import lazy_names

_HOME = {"build_model": ".build", "named_model_configs": ".build", "DecoderConfig": ".config",
         "EncoderConfig": ".config", "ModelConfig": ".config", "NUM_FRAMES": ".mae", "TactileVideoMAE": ".mae"}
__all__ = sorted(_HOME)

__getattr__ = lazy_names(__name__, _HOME)
