"""Plain dataclasses for the model's sizes. Their defaults are the tiny model and the only defaults: Hydra's
`physiotouch/conf/model/*.yaml` extend them (`model_settings`, physiotouch/hydra_setup.py) with their deltas.

Field names follow Hugging Face's CLIP vision config, so a CLIP `config.json` can be compared key by key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

from physiotouch.cli import ConfigError
from physiotouch.utils.settings import finite, require

BUILDER = "physiotouch.models.build_model"  # the `_target_` of every physiotouch/conf/model option
# Bounds on each size, far above any real model (ViT-G/14: 48 layers of width 1,664), so that a file's config is
# refused arithmetically before anything is built; the parameter count is bounded in checkpoints/format.py.
SIZE_LIMITS = {"hidden_size": 16_384, "intermediate_size": 65_536, "num_hidden_layers": 256,
               "num_attention_heads": 256, "image_size": 4_096, "patch_size": 4_096, "num_channels": 16}


@dataclass
class EncoderConfig:
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    image_size: int = 56
    patch_size: int = 14
    num_channels: int = 3
    hidden_act: str = "gelu"  # the reference's CLIP (DataComp.XL) uses gelu; OpenAI's CLIP quick_gelu
    layer_norm_eps: float = 1e-5
    # 'random' (fresh weights) or 'clip' (a local Hugging Face CLIP directory at clip_path).
    init: str = "random"
    clip_path: str | None = None
    # The video tube embedding: 'random' (the reference) or 'clip_2d' (CLIP's 2-D patch kernel, AnyTouch's choice).
    video_embed_init: str = "random"
    # Recompute each encoder layer's activations in the backward pass instead of keeping them: less memory for
    # the large encoder (ViT-L/14) at about one extra forward pass of compute.
    gradient_checkpointing: bool = False

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


@dataclass
class DecoderConfig:
    hidden_size: int = 32
    intermediate_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True


@dataclass
class ModelConfig:
    BUILDER: ClassVar[str] = BUILDER  # the `_target_` a model node may name (utils/settings.build_settings)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    projection_dim: int = 48
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False
    compile: bool = False  # a run option, not a size: train the forward passes through torch.compile

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Sizes first, arithmetically, before anything is built (a ~1 KB edit of a checkpoint's config must not make a
        model of 20,000 layers on any device), then how they fit together."""
        e = self.encoder
        sizes = [(f"model.{where}.{key}", getattr(node, key), SIZE_LIMITS[key])
                 for where, node in (("encoder", e), ("decoder", self.decoder))
                 for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")]
        sizes += [(f"model.encoder.{key}", getattr(e, key), SIZE_LIMITS[key])
                  for key in ("image_size", "patch_size", "num_channels")]
        sizes.append(("model.projection_dim", self.projection_dim, SIZE_LIMITS["hidden_size"]))
        for key, value, limit in sizes:
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
                raise ConfigError(f"{key}={value!r} must be an integer in [1, {limit}]")
        for where, node in (("encoder", e), ("decoder", self.decoder)):
            if node.hidden_size % node.num_attention_heads:
                raise ConfigError(f"model.{where}.hidden_size {node.hidden_size} is not a multiple of "
                                  f"num_attention_heads {node.num_attention_heads}")
        if e.image_size % e.patch_size:
            raise ConfigError(f"model.encoder.image_size {e.image_size} is not a multiple of patch_size {e.patch_size}")
        # 0 masks nothing: the loss on masked patches would be 0/0
        require(finite(self.mask_ratio) and 0 < self.mask_ratio < 1, "model.mask_ratio", self.mask_ratio,
                "a number in (0, 1)")
        patches = (e.image_size // e.patch_size) ** 2
        if int(patches * (1 - self.mask_ratio)) < 1:  # random_masking keeps int(L·(1 − ratio)) tokens
            raise ConfigError(f"model.mask_ratio={self.mask_ratio} leaves no visible patch of the {patches} "
                              f"(image {e.image_size}, patch {e.patch_size}); at most {1 - 1 / patches:.4g}")
        if e.init not in ("random", "clip"):
            raise ConfigError(f"model.encoder.init must be 'random' or 'clip'; got '{e.init}'")
        if e.init == "clip" and not e.clip_path:
            raise ConfigError("model.encoder.init=clip needs model.encoder.clip_path=DIR (a local CLIP checkpoint "
                              "folder)")
        if e.video_embed_init not in ("random", "clip_2d"):
            raise ConfigError(f"model.encoder.video_embed_init must be 'random' or 'clip_2d'; got "
                              f"'{e.video_embed_init}'")

