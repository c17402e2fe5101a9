"""Read the reference program's checkpoints (`best.pth` / `last.pth`) and its bare state dicts.

The reference saved {model, optimizer, epoch, scaler, args (argparse.Namespace), loss}. Its key names differ from
ours in three places, renamed by `upstream_to_ours`:
- `touch_model.*` (a Hugging Face CLIP vision transformer) -> `encoder.*` (same inner names);
- `touch_decoder_blocks.N.*` (Hugging Face ViT layers) -> `decoder_blocks.N.*` (CLIP-style names, same function);
- `touch_projection`, `video_patch_embedding`, `decoder_pred`, `decoder_pred_video` -> `projection`,
  `video_patch_embed`, `head_image`, `head_video`.
`video_position_embedding` was allocated by the reference and never used, so it is dropped;
`decoder_pos_embed` is fixed (sine-cosine) and is checked against ours rather than copied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from physiotouch.models import ModelConfig, TactileVideoMAE, named_model_configs
from physiotouch.utils.safe_load import CheckpointError, safe_torch_load
from physiotouch.utils.settings import build_settings

from .format import FORMAT, build_for_weights
from .io import atomic_torch_save

_PREFIXES = [
    ("touch_model.", "encoder."),
    ("touch_projection.", "projection."),
    ("video_patch_embedding.", "video_patch_embed."),
    ("decoder_pred_video.", "head_video."),
    ("decoder_pred.", "head_image."),
]
_VIT_LAYER = [
    ("attention.attention.query.", "self_attn.q_proj."),
    ("attention.attention.key.", "self_attn.k_proj."),
    ("attention.attention.value.", "self_attn.v_proj."),
    ("attention.output.dense.", "self_attn.out_proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
    ("layernorm_before.", "layer_norm1."),
    ("layernorm_after.", "layer_norm2."),
]
_DROPPED = ("video_position_embedding.", "touch_model.embeddings.position_ids")


def upstream_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a reference state dict to this package's names (see the module docstring)."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")  # saved from a DDP-wrapped model
        if key.startswith(_DROPPED) or key == "decoder_pos_embed":
            continue
        block = re.match(r"touch_decoder_blocks\.(\d+)\.(.*)", key)
        if block:
            rest = block.group(2)
            for old, new in _VIT_LAYER:
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            key = f"decoder_blocks.{block.group(1)}.{rest}"
        else:
            for old, new in _PREFIXES:
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
        out[key] = value
    return out


def infer_shapes(state: dict[str, torch.Tensor]) -> dict:
    """Sizes that the weights themselves determine (heads, activation and eps do not show in weights)."""
    try:
        pos = state["touch_model.embeddings.position_embedding.weight"]
        patch = state["touch_model.embeddings.patch_embedding.weight"]
        proj = state["touch_projection.weight"]
        dec_embed = state["decoder_embed.weight"]
    except KeyError as err:
        raise CheckpointError(f"not a reference TactileVideoMAE state dict: key {err} is missing") from None
    try:
        return _shapes(state, pos, patch, proj, dec_embed)
    except (IndexError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"not a reference TactileVideoMAE state dict: its weights have unexpected shapes "
                              f"({type(err).__name__}: {err})") from None


def _shapes(state, pos, patch, proj, dec_embed) -> dict:
    grid = int(round((pos.shape[0] - 1) ** 0.5))
    enc_layers = {int(m.group(1)) for k in state if (m := re.match(r"touch_model\.encoder\.layers\.(\d+)\.", k))}
    dec_layers = {int(m.group(1)) for k in state if (m := re.match(r"touch_decoder_blocks\.(\d+)\.", k))}
    return {
        "encoder": {
            "hidden_size": patch.shape[0], "patch_size": patch.shape[-1], "image_size": grid * patch.shape[-1],
            "num_hidden_layers": len(enc_layers),
            "intermediate_size": state["touch_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        },
        "decoder": {
            "hidden_size": dec_embed.shape[0], "num_hidden_layers": len(dec_layers),
            "intermediate_size": state["touch_decoder_blocks.0.intermediate.dense.weight"].shape[0],
        },
        "projection_dim": proj.shape[0],
    }


def model_config_for(state: dict[str, torch.Tensor], settings: dict | None = None) -> ModelConfig:
    """The named config (physiotouch/conf/model/*.yaml) whose sizes match the weights; else a guess with 64-wide
    heads."""
    shapes = infer_shapes(state)
    settings = settings or {}
    for cfg in named_model_configs().values():
        d = cfg.to_dict()
        if all(d["encoder"][k] == v for k, v in shapes["encoder"].items()) and \
                all(d["decoder"][k] == v for k, v in shapes["decoder"].items()) and \
                d["projection_dim"] == shapes["projection_dim"]:
            break
    else:
        enc = {**shapes["encoder"], "num_attention_heads": max(1, shapes["encoder"]["hidden_size"] // 64)}
        dec = {**shapes["decoder"], "num_attention_heads": max(1, shapes["decoder"]["hidden_size"] // 32)}
        cfg = build_settings(ModelConfig, {"encoder": enc, "decoder": dec, "projection_dim": shapes["projection_dim"]},
                             "model")
    cfg.encoder.init, cfg.encoder.clip_path = "random", None  # the weights come from the checkpoint
    if "mask_ratio" in settings:
        cfg.mask_ratio = float(settings["mask_ratio"])
    if "norm_pix_loss" in settings:
        cfg.norm_pix_loss = bool(settings["norm_pix_loss"])
    return cfg


@dataclass
class UpstreamCheckpoint:
    model: TactileVideoMAE
    model_cfg: ModelConfig
    settings: dict = field(default_factory=dict)  # the reference run's arguments (alpha, beta, mask_ratio, ...)
    epoch: int | None = None
    loss: float | None = None

    @property
    def scheme(self) -> str:
        s = self.settings
        if not s.get("use_joint_training", True):
            return "baseline_alternating"
        return "balanced" if abs(float(s.get("alpha", 0.5)) - 0.75) < 1e-9 else "equal"


def load_state_into(model: TactileVideoMAE, state: dict[str, torch.Tensor], source: str) -> None:
    """Load renamed reference weights; every mismatch is named with the file it came from."""
    ours = upstream_to_ours(state)
    try:
        missing, unexpected = model.load_state_dict(ours, strict=False)
    except RuntimeError as err:  # size mismatch
        raise CheckpointError(f"'{source}' holds weights of another model size than the configured one "
                              f"({str(err).splitlines()[-1].strip()[:160]}); pick the model=... it was trained with"
                              ) from None
    missing = [k for k in missing if k != "decoder_pos_embed"]
    if missing or unexpected:
        raise CheckpointError(f"'{source}' does not fit the model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    if "decoder_pos_embed" in state:
        theirs = state["decoder_pos_embed"].to(model.decoder_pos_embed)
        if theirs.shape != model.decoder_pos_embed.shape or not torch.allclose(theirs, model.decoder_pos_embed,
                                                                              atol=1e-6):
            raise CheckpointError(f"'{source}': its decoder_pos_embed differs from the fixed sine-cosine embedding")


def load_upstream_checkpoint(path: str | Path, model_cfg: ModelConfig | None = None) -> UpstreamCheckpoint:
    """Read a reference `best.pth` / `last.pth` (or a bare reference state dict) safely into our model."""
    obj = safe_torch_load(path, allow_namespace=True)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        state, args = obj["model"], obj.get("args")
        settings = dict(vars(args)) if hasattr(args, "__dict__") else dict(args) if isinstance(args, dict) else {}
        epoch, loss = obj.get("epoch"), obj.get("loss")
    elif isinstance(obj, dict) and "touch_projection.weight" in obj:
        state, settings, epoch, loss = obj, {}, None, None
    else:
        raise CheckpointError(f"'{path}' is not a reference checkpoint: expected a dict with 'model' weights")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"'{path}' is not a reference checkpoint: its 'model' entry is not a dict of tensors")
    cfg = model_cfg or model_config_for(state, settings)
    model = build_for_weights(cfg, upstream_to_ours(state), str(path))
    load_state_into(model, state, str(path))
    return UpstreamCheckpoint(model, cfg, settings, None if epoch is None else int(epoch),
                              None if loss is None else float(loss))


def save_converted(ck: UpstreamCheckpoint, source: str | Path, path: str | Path) -> None:
    """A reference checkpoint as one of ours (FORMAT): weights under `model.`, plain hyper-parameters only."""
    settings = {k: v for k, v in ck.settings.items() if isinstance(v, (int, float, str, bool, type(None)))}
    atomic_torch_save({
        "format": FORMAT,
        "state_dict": {f"model.{k}": v for k, v in ck.model.state_dict().items()},
        "hyper_parameters": {"model_cfg": ck.model_cfg.to_dict(),
                             "loss_cfg": {"name": ck.scheme, "alpha": settings.get("alpha"),
                                          "beta": settings.get("beta"), "static_ratio": settings.get("static_ratio")}},
        "physiotouch": {"converted_from": str(source), "upstream_settings": settings,
                        "upstream_epoch": ck.epoch, "upstream_loss": ck.loss},
    }, path)
