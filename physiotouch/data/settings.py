"""The augmentation settings (the `augment` config node), apart from the torch code that applies them
(augment.py), so that composing the config imports no torch. The split's and the synthetic set's settings live with
their own torch-free code (splits.py, synthetic.py)."""

from __future__ import annotations

from dataclasses import dataclass

from physiotouch.utils.settings import finite, require


@dataclass
class AugmentConfig:
    enabled: bool = True
    hflip: float = 0.5
    vflip: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.5
    hue: float = 0.3

    def validate(self) -> None:
        for key in ("hflip", "vflip"):
            p = getattr(self, key)
            require(finite(p) and 0 <= p <= 1, f"augment.{key}", p, "a probability in [0, 1]")
