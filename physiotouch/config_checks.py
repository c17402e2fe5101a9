"""Config values checked where they enter, each against one rule, so a typo stops the run in one line that
names the key (not a traceback deep in Lightning, and not 1,009 epochs of a negative `max_epochs`).

Settings dataclasses are built from their nodes (`utils/settings.build_settings`: every key known and typed, then
the range rules written beside their fields). The keys that belong to no dataclass (the trainer's, the data
module's, the seed) are one table: (key, rule, what it must be); `tests/test_hostile_input.py` tries a bad value for
every row and every dataclass rule.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf, open_dict

from physiotouch.cli import ConfigError
from physiotouch.data.background import BACKGROUNDS
from physiotouch.data.settings import AugmentConfig
from physiotouch.data.splits import SplitConfig
from physiotouch.data.synthetic import SynthConfig
from physiotouch.evaluation.settings import EvalConfig
from physiotouch.models.config import ModelConfig
from physiotouch.training.settings import LossConfig, OptimConfig
from physiotouch.utils.plain import to_plain
from physiotouch.utils.settings import build_settings, finite, integer

log = logging.getLogger(__name__)

_MISSING = object()


def positive_int(v): return integer(v) and v >= 1
def non_negative_int(v): return integer(v) and v >= 0
def non_negative(v): return finite(v) and v >= 0
def open_unit(v): return finite(v) and 0 < v < 1
def optional(rule: Callable) -> Callable: return lambda v: v is None or rule(v)


# Where each settings dataclass's node sits in the train config: every key must be one of its fields, of its type.
SETTINGS_AT = {"model": ModelConfig, "loss": LossConfig, "optim": OptimConfig, "augment": AugmentConfig,
               "data.split": SplitConfig, "data.synthetic": SynthConfig, "eval": EvalConfig}
PRECISIONS = ("auto", "64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed",
              "transformer-engine", "transformer-engine-float16", 64, 32, 16)

# (key, rule, what the value must be). Keys absent from a config (e.g. evaluate's) are skipped.
TRAIN_RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("seed", integer, "an integer"),
    ("trainer.precision", lambda v: v in PRECISIONS, f"one of Lightning's precisions ({', '.join(PRECISIONS[:10])})"),
    ("trainer.max_epochs", positive_int, "an integer >= 1"),
    ("validation.mask_ratio", open_unit, "a number in (0, 1)"),
    ("data.batch_size", positive_int, "an integer >= 1"),
    ("data.val_batch_size", optional(positive_int), "null or an integer >= 1"),
    ("data.num_workers", non_negative_int, "an integer >= 0"),
    ("data.background", lambda v: v in BACKGROUNDS, f"one of {', '.join(BACKGROUNDS)}"),
    ("preflight.min_free_disk_mb", non_negative, "a number >= 0"),
]


def _value(cfg: DictConfig, key: str) -> Any:
    try:
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=True)
    except Exception as err:  # noqa: BLE001 - an interpolation that does not resolve is a config error too
        raise ConfigError(f"config key {key} cannot be resolved: {err}") from None
    return to_plain(value)


def validate_train_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value breaks its rule."""
    for where, cls in SETTINGS_AT.items():
        node = _value(cfg, where)
        if node is not _MISSING and node is not None:  # every key known and typed, then the class's range rules
            build_settings(cls, node, where, **{name: str(_value(cfg, key))
                                                for name, key in getattr(cls, "SET_BY_CODE", {}).items()})
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
