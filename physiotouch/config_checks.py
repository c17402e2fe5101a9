"""Config values checked where they enter, each against one rule, so a typo stops the run in one line that
names the key (not a traceback deep in Lightning, and not 1,009 epochs of a negative `max_epochs`).

One table: (key, rule, what it must be). Add a row for a new key; `tests/test_hostile_input.py` reads the same
table to try a bad value for every row.
"""

from __future__ import annotations

import difflib
import logging
import math
import types
import typing
from dataclasses import is_dataclass
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf, open_dict

from physiotouch.cli import ConfigError
from physiotouch.data.augment import AugmentConfig
from physiotouch.data.background import BACKGROUNDS
from physiotouch.data.splits import SplitConfig
from physiotouch.data.synthetic import SynthConfig
from physiotouch.models.config import ModelConfig
from physiotouch.training.optim import OptimConfig
from physiotouch.training.schemes import LossConfig
from physiotouch.utils.plain import to_plain

log = logging.getLogger(__name__)

_MISSING = object()


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def positive_int(v): return _integer(v) and v >= 1
def non_negative_int(v): return _integer(v) and v >= 0
def positive(v): return _number(v) and v > 0
def non_negative(v): return _number(v) and v >= 0
def open_unit(v): return _number(v) and 0 < v < 1
def unit(v): return _number(v) and 0 <= v <= 1
def optional(rule: Callable) -> Callable: return lambda v: v is None or rule(v)
def betas(v): return isinstance(v, (list, tuple)) and len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v)


# Where each settings dataclass's node sits in the train config: every key must be one of its fields, of its type.
SETTINGS_AT = {"model": ModelConfig, "loss": LossConfig, "optim": OptimConfig, "augment": AugmentConfig,
               "data.split": SplitConfig, "data.synthetic": SynthConfig}
PRECISIONS = ("auto", "64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed",
              "transformer-engine", "transformer-engine-float16", 64, 32, 16)

# (key, rule, what the value must be). Keys absent from a config (e.g. evaluate's) are skipped.
TRAIN_RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("seed", _integer, "an integer"),
    ("trainer.precision", lambda v: v in PRECISIONS, f"one of Lightning's precisions ({', '.join(PRECISIONS[:10])})"),
    ("trainer.max_epochs", positive_int, "an integer >= 1"),
    ("optim.blr", positive, "a finite number > 0"),
    ("optim.lr", optional(positive), "null or a finite number > 0"),
    ("optim.min_lr", non_negative, "a finite number >= 0"),
    ("optim.weight_decay", non_negative, "a finite number >= 0"),
    ("optim.warmup_epochs", non_negative, "a number in [0, trainer.max_epochs]"),
    ("optim.accum_iter", positive_int, "an integer >= 1"),
    ("optim.grad_clip", optional(non_negative), "null, 0 (off) or a finite number > 0"),
    ("optim.betas", betas, "two numbers in [0, 1)"),
    ("model.mask_ratio", open_unit, "a number in (0, 1)"),
    ("validation.mask_ratio", open_unit, "a number in (0, 1)"),
    ("data.batch_size", positive_int, "an integer >= 1"),
    ("data.val_batch_size", optional(positive_int), "null or an integer >= 1"),
    ("data.num_workers", non_negative_int, "an integer >= 0"),
    ("data.background", lambda v: v in BACKGROUNDS, f"one of {', '.join(BACKGROUNDS)}"),
    ("loss.alpha", non_negative, "a finite number >= 0"),
    ("loss.beta", non_negative, "a finite number >= 0"),
    ("loss.static_ratio", unit, "a number in [0, 1]"),
    ("augment.hflip", unit, "a probability in [0, 1]"),
    ("augment.vflip", unit, "a probability in [0, 1]"),
    ("preflight.min_free_disk_mb", non_negative, "a number >= 0"),
]


def _value(cfg: DictConfig, key: str) -> Any:
    try:
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=True)
    except Exception as err:  # noqa: BLE001 - an interpolation that does not resolve is a config error too
        raise ConfigError(f"config key {key} cannot be resolved: {err}") from None
    return to_plain(value)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a plain config value can be a field of this type (int for float is fine; bool is never a number)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _integer(value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (list, tuple) or origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if hint is dict or origin is dict or is_dataclass(hint):
        return isinstance(value, dict)
    return True  # Any, or a type a config value is not checked against


def settings_errors(values: Any, cls: type, where: str) -> str | None:
    """The first key of a settings node that its dataclass does not have, or whose value has the wrong type."""
    if not isinstance(values, dict):
        return f"{where} must be a mapping of {cls.__name__}'s settings; got {values!r}"
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key == "_target_":
            continue  # the builder's name: checked where it is used (models.config.BUILDER)
        if key not in hints:
            near = difflib.get_close_matches(str(key), list(hints), n=1)
            return (f"unknown key {where}.{key}" + (f" (did you mean {where}.{near[0]}?)" if near else "") +
                    f"; {where} has: {', '.join(sorted(hints))}")
        if not _fits(value, hints[key]):
            return f"{where}.{key}={value!r} is not valid: it must be of type {_type_name(hints[key])}"
        if is_dataclass(hints[key]) and value is not None:
            nested = settings_errors(value, hints[key], f"{where}.{key}")
            if nested:
                return nested
    return None


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def validate_train_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value breaks its rule."""
    for where, cls in SETTINGS_AT.items():
        node = _value(cfg, where)
        if node is not _MISSING and node is not None:
            problem = settings_errors(node, cls, where)
            if problem:
                raise ConfigError(problem)
    for key, rule, must in TRAIN_RULES:
        value = _value(cfg, key)
        if value is _MISSING:
            continue
        if not rule(value):
            raise ConfigError(f"{key}={value!r} is not valid: it must be {must} (set it with {key}=VALUE)")
    epochs, warmup = _value(cfg, "trainer.max_epochs"), _value(cfg, "optim.warmup_epochs")
    if warmup is not _MISSING and epochs is not _MISSING and warmup > epochs:
        # A smoke run (trainer.max_epochs=1) with the default warm-up must work: shorten it to half the run (the
        # peak in the middle, then the decay), say so, and record it (the run's config shows the value used).
        shorter = epochs / 2
        log.warning("optim.warmup_epochs=%s is longer than trainer.max_epochs=%s: warming up for %s epochs instead",
                    warmup, epochs, shorter)
        with open_dict(cfg):
            cfg.optim.warmup_epochs = shorter
    if _value(cfg, "loss.alpha") is not _MISSING and _value(cfg, "loss.alpha") + _value(cfg, "loss.beta") <= 0:
        raise ConfigError("loss.alpha + loss.beta must be > 0")
