"""Start the encoder from a local Hugging Face CLIP checkpoint directory. Nothing is ever downloaded.

Accepted layouts: `config.json` plus `model.safetensors` or `pytorch_model.bin`, saved from a full `CLIPModel`
(keys `vision_model.*`, `visual_projection.weight`, a nested `vision_config`), from `CLIPVisionModelWithProjection`
(`vision_model.*`, `visual_projection.weight`) or from transformers 5's `CLIPVisionModel` (no prefix).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from physiotouch.utils.safe_load import CheckpointError, load_safetensors, safe_torch_load

from .mae import TactileVideoMAE

# Config keys that must agree between the CLIP directory and our model config.
_CHECKED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size",
            "image_size", "hidden_act")


def read_clip_dir(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """-> (vision config values, vision state dict with `vision_model.` stripped; `visual_projection.weight` kept)."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"CLIP directory '{root}' does not exist; set model.encoder.clip_path to a local folder "
                              f"holding config.json and model.safetensors (or pytorch_model.bin)")
    config_file = root / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"CLIP directory '{root}' has no config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"'{config_file}' is not a readable CLIP config.json ({type(err).__name__}: "
                              f"{str(err)[:100]}); save the folder again with save_pretrained") from None
    vision = config.get("vision_config", config) if isinstance(config, dict) else None
    if not isinstance(vision, dict):
        raise CheckpointError(f"'{config_file}' does not hold a CLIP vision config (a mapping with vision_config)")
    if (root / "model.safetensors").is_file():
        state = load_safetensors(root / "model.safetensors")
    elif (root / "pytorch_model.bin").is_file():
        state = safe_torch_load(root / "pytorch_model.bin")
    else:
        raise CheckpointError(f"CLIP directory '{root}' has neither model.safetensors nor pytorch_model.bin "
                              f"(sharded checkpoints: merge them into one file first)")
    has_prefix = any(k.startswith("vision_model.") for k in state)
    out = {}
    for key, value in state.items():
        if has_prefix and key.startswith("vision_model."):
            out[key.removeprefix("vision_model.")] = value
        elif not has_prefix and key.startswith(("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")):
            out[key] = value
        elif key == "visual_projection.weight":
            out[key] = value
    if not out:
        raise CheckpointError(f"CLIP directory '{root}': no vision tower weights found (no vision_model.* keys)")
    return vision, out


def load_clip_into(model: TactileVideoMAE, path: str | Path, video_embed_from_2d: bool = False) -> dict:
    """Copy CLIP's vision weights into `model.encoder` (and its projection, when the sizes agree).

    video_embed_from_2d: start the video tube Conv3d from CLIP's 2-D patch kernel (AnyTouch's choice) instead of
    leaving it random (the reference's). The Conv3d's channel axis runs over frames and its depth over R, G, B
    (see mae.py), so kernel[o, frame, c] = W2d[o, c] / 3: each frame gets CLIP's kernel, and the sum over the three
    frames of a still clip equals CLIP's response to one frame.
    Returns a small report of what was loaded.
    """
    vision, state = read_clip_dir(path)
    enc = model.cfg.encoder
    wrong = {k: (vision.get(k), getattr(enc, k)) for k in _CHECKED if k in vision and vision[k] != getattr(enc, k)}
    if wrong:
        detail = ", ".join(f"{k}: CLIP {a} vs config {b}" for k, (a, b) in wrong.items())
        raise CheckpointError(f"CLIP directory '{path}' does not match model.encoder: {detail}. "
                              f"Choose the model config that matches this CLIP checkpoint (e.g. model=vit_l14).")
    projection = state.pop("visual_projection.weight", None)
    state.pop("embeddings.position_ids", None)  # a buffer older checkpoints saved
    ours = model.encoder.state_dict()
    bad = {k: (tuple(v.shape), tuple(ours[k].shape)) for k, v in state.items()
           if k in ours and v.shape != ours[k].shape}
    if bad:
        raise CheckpointError(f"CLIP directory '{path}': weight shapes disagree with the config: "
                              f"{list(bad.items())[:5]}")
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"CLIP directory '{path}': missing weights {missing[:6]}, unexpected {unexpected[:6]}")
    report = {"clip_path": str(path), "encoder_tensors": len(state), "projection": False, "video_embed_from_2d": False}
    if projection is not None and projection.shape == model.projection.weight.shape:
        with torch.no_grad():
            model.projection.weight.copy_(projection)
        report["projection"] = True
    if video_embed_from_2d:
        kernel2d = model.encoder.embeddings.patch_embedding.weight  # [D, C, p, p]
        with torch.no_grad():
            frames = model.video_patch_embed.weight.shape[1]
            model.video_patch_embed.weight.copy_(kernel2d.unsqueeze(1).expand(-1, frames, -1, -1, -1) / frames)
        report["video_embed_from_2d"] = True
    return report
