"""Our checkpoint files: Lightning's `.ckpt` dict, read safely, plus the checks around it.

A physiotouch checkpoint is a dict with `format` (FORMAT), `state_dict` (the LightningModule's, model weights under
`model.`) and `hyper_parameters` holding plain values only (`model_cfg`, `loss_cfg`, ...), so that it loads with
`torch.load(weights_only=True)`. Training writes it (`PretrainModule.on_save_checkpoint`), and so does
`python -m physiotouch.legacy convert` (`reference.save_converted`); `load_checkpoint` reads it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from physiotouch.models import ModelConfig, TactileVideoMAE, named_model_configs
from physiotouch.utils.safe_load import CheckpointError, safe_torch_load
from physiotouch.utils.settings import build_settings

FORMAT = "physiotouch-ckpt-1"  # written into every checkpoint; a file naming another format is refused


def model_state_from(ckpt: dict) -> dict[str, torch.Tensor]:
    state = ckpt["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items()
            if isinstance(k, str) and k.startswith("model.") and isinstance(v, torch.Tensor)}


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """Read one of our checkpoints (training `.ckpt` or a converted reference one), refusing anything else."""
    ckpt = safe_torch_load(path, allow_namespace=True, mmap=mmap)  # the Namespace only so a reference file gets a hint
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict) or \
            not isinstance(ckpt.get("hyper_parameters"), dict) or \
            not isinstance(ckpt["hyper_parameters"].get("model_cfg"), dict):
        hint = (" It looks like a reference checkpoint: convert it first with "
                f"`python -m physiotouch.legacy convert {path} NEW.ckpt`."
                if isinstance(ckpt, dict) and "model" in ckpt else "")
        raise CheckpointError(f"'{path}' is not a physiotouch checkpoint (no state_dict / model_cfg).{hint}")
    fmt = ckpt.get("format", FORMAT)  # files written before the format key was stamped have none
    if not (isinstance(fmt, str) and fmt == FORMAT):
        raise CheckpointError(f"'{path}' is a checkpoint of format {str(fmt)[:40]!r}; this physiotouch reads "
                              f"{FORMAT!r}: use the physiotouch version that wrote it")
    return ckpt


# Sizes that decide the weights' shapes (mask ratio, activation or eps do not).
_SHAPE_KEYS = {"encoder": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                           "patch_size"),
               "decoder": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")}
MAX_PARAMETERS = 3_000_000_000  # 9x ViT-L/14's TactileVideoMAE; a file claiming more is refused before allocating


def _sizes(model_cfg: dict | ModelConfig) -> tuple:
    d = model_cfg.to_dict() if isinstance(model_cfg, ModelConfig) else model_cfg
    try:
        return tuple(d[part].get(k) for part, keys in _SHAPE_KEYS.items() for k in keys) + (d.get("projection_dim"),)
    except (KeyError, AttributeError, TypeError):
        return ()


def same_model(a: dict | ModelConfig, b: dict | ModelConfig) -> bool:
    """Whether two model configs give weights of the same shapes."""
    return bool(_sizes(a)) and _sizes(a) == _sizes(b)


def model_name(model_cfg: dict | ModelConfig) -> str:
    """'model=tiny' for a shipped size, else the sizes in words (for messages)."""
    for name, cfg in named_model_configs().items():
        if same_model(cfg, model_cfg):
            return f"model={name}"
    sizes = _sizes(model_cfg)
    return f"a {sizes[0]}-wide, {sizes[2]}-layer encoder (no shipped model=... has that size)" if sizes else \
        "an unreadable model config"


def require_same_model(theirs: dict | ModelConfig, ours: dict | ModelConfig, what: str) -> None:
    """`what` (a checkpoint named for the message) must hold weights of the configured model's size."""
    if not same_model(theirs, ours):
        raise CheckpointError(f"{what} was trained with {model_name(theirs)}, this run is configured with "
                              f"{model_name(ours)}; add {model_name(theirs).split(' ')[0]} (or pick another "
                              f"checkpoint)")


def parameter_estimate(cfg: ModelConfig) -> int:
    """Weights of the transformer layers (attention 4·d², MLP 2·d·ff per layer): a lower bound, cheap to compute."""
    e, d = cfg.encoder, cfg.decoder
    return (e.num_hidden_layers * (4 * e.hidden_size ** 2 + 2 * e.hidden_size * e.intermediate_size) +
            d.num_hidden_layers * (4 * d.hidden_size ** 2 + 2 * d.hidden_size * d.intermediate_size))


def build_for_weights(cfg: ModelConfig, state: dict[str, torch.Tensor], source: str) -> TactileVideoMAE:
    """The model for a file's weights, checked on the meta device first (no memory) so that a file claiming a huge
    model, or weights of another size, is refused before anything is allocated."""
    if parameter_estimate(cfg) > MAX_PARAMETERS:  # before even the meta build, which costs time per layer
        raise CheckpointError(f"'{source}' describes a model of at least {parameter_estimate(cfg) / 1e9:.0f} G "
                              f"parameters, above the limit of {MAX_PARAMETERS / 1e9:.0f} G: refused before "
                              f"allocating it")
    try:
        with torch.device("meta"):
            skeleton = TactileVideoMAE(cfg)
    except (ValueError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"'{source}': its model config cannot be built ({err})") from None
    count = sum(p.numel() for p in skeleton.parameters())
    if count > MAX_PARAMETERS:
        raise CheckpointError(f"'{source}' describes a model of {count / 1e9:.1f} G parameters, above the limit of "
                              f"{MAX_PARAMETERS / 1e9:.0f} G: refused before allocating it")
    expected = skeleton.state_dict()
    for key, value in state.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"'{source}' holds weights of another model size ({key}: {tuple(value.shape)}, "
                                  f"expected {tuple(expected[key].shape)} for {model_name(cfg)})")
    return TactileVideoMAE(cfg)


def check_resumable(path: str | Path, model_cfg: dict, max_epochs: int | None = None) -> tuple[int, int, dict]:
    """Before `ckpt_path=` hands a file to Lightning: it must be a full training checkpoint of this model size.
    -> (logging step, epoch) it was saved at (the CSV logger keeps the rows up to there), and, for a checkpoint
    saved at an epoch's end, that epoch's `epoch/*` summary: Lightning logs it only after the checkpoint is written,
    so a kill in between loses the row, and the resumed run (starting at the next epoch) never logs it again."""
    ckpt = load_checkpoint(path, mmap=True)
    if "optimizer_states" not in ckpt or "loops" not in ckpt:
        raise CheckpointError(f"'{path}' holds weights only (no optimiser or loop state), so training cannot resume "
                              f"from it; start from its weights with init_from={path} instead")
    require_same_model(ckpt["hyper_parameters"]["model_cfg"], model_cfg, f"'{path}'")
    loop = (ckpt["loops"].get("fit_loop") or {}).get("epoch_loop.state_dict") or {}
    epoch = int(ckpt.get("epoch", 0))
    if max_epochs is not None and epoch + 1 > max_epochs:
        raise CheckpointError(f"'{path}' has already trained {epoch + 1} epochs, more than trainer.max_epochs="
                              f"{max_epochs}; raise trainer.max_epochs to train on (or evaluate it as it is)")
    history = (ckpt.get("physiotouch") or {}).get("history") or []
    last = history[-1] if history and history[-1].get("epoch") == epoch else {}
    summary = {k: v for k, v in last.items() if k.startswith("epoch/")}
    return int(loop.get("_batches_that_stepped", ckpt.get("global_step", 0))), epoch, summary


def load_model(path: str | Path) -> tuple[TactileVideoMAE, dict]:
    """-> (model with the checkpoint's weights, the checkpoint dict)."""
    ckpt = load_checkpoint(path)
    try:
        cfg = build_settings(ModelConfig, ckpt["hyper_parameters"]["model_cfg"], "model")
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise CheckpointError(f"'{path}': its model config is not usable ({err})") from None
    cfg.encoder.init, cfg.encoder.clip_path = "random", None  # the weights come from the file
    state = model_state_from(ckpt)
    model = build_for_weights(cfg, state, str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"'{path}' does not fit its own model config: missing {missing[:6]}, "
                              f"unexpected {unexpected[:6]}")
    return model, ckpt
