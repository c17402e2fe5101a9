"""Hydra / OmegaConf glue: what Hydra needs from physiotouch before it composes (resolvers, the dataclasses'
defaults), composing outside a Hydra app (tests), the command line's overrides, the config tree print.

One source per default: each settings dataclass's field defaults are stored as the Hydra config node
`<name>_settings`, and the YAML files extend that node with their deltas
(`physiotouch/conf/model/vit_l14.yaml`:
`defaults: [/model_settings@_here_, _self_]` plus its sizes). The node is the dataclass itself, a typed structured
config: composition refuses a key the dataclass lacks or a value of the wrong type, and `cli.py` says so in one line
(exit 2). Range rules live beside their fields (each dataclass's `validate`).
"""

from __future__ import annotations

import typing
from dataclasses import field, fields, make_dataclass

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from physiotouch.data.settings import AugmentConfig
from physiotouch.data.splits import SplitConfig
from physiotouch.data.synthetic import SynthConfig
from physiotouch.evaluation.settings import EvalConfig
from physiotouch.models.config import BUILDER, ModelConfig
from physiotouch.paths import CONF_DIR, project_root
from physiotouch.training.settings import LossConfig, OptimConfig

# Each node is a root-level config named `<name>_settings` (not a group: `--help` lists the groups a user picks from).
SETTINGS_NODE = "{}_settings"
# The model group is built with `_target_` like data, trainer, loggers and callbacks (hydra.utils.instantiate); the
# training module calls the same function on the saved plain values (models/build.py).
TARGETS = {"model": BUILDER}
SETTINGS = {"model": ModelConfig, "loss": LossConfig, "optim": OptimConfig, "augment": AugmentConfig,
            "split": SplitConfig, "synthetic": SynthConfig, "eval": EvalConfig}


def register_with_hydra() -> None:
    """The resolvers the config tree uses and the `<name>_settings` nodes. Called once per process by Hydra's
    plugin scan (`hydra_plugins/physiotouch_configs`), before anything composes: no entry point calls it."""
    store = ConfigStore.instance()
    for name, cls in SETTINGS.items():
        store.store(name=SETTINGS_NODE.format(name), node=settings_node(name, cls))
    if not OmegaConf.has_resolver("physiotouch_root"):
        OmegaConf.register_new_resolver("physiotouch_root", lambda: str(project_root()))
    if not OmegaConf.has_resolver("physiotouch_is_alternating"):
        OmegaConf.register_new_resolver("physiotouch_is_alternating", lambda mode: mode == "alternating")
    if not OmegaConf.has_resolver("physiotouch_one_minus"):
        OmegaConf.register_new_resolver("physiotouch_one_minus", lambda x: round(1.0 - float(x), 12))


def settings_node(name: str, cls: type) -> type:
    """The typed node Hydra stores for a settings dataclass: the class itself, with its builder as `_target_` where
    the group is instantiated (the model) and without the fields the code sets (the synthetic set's `out` is
    data.root). Same class name, so that composition errors name the dataclass."""
    skip = getattr(cls, "SET_BY_CODE", {})
    if name not in TARGETS and not skip:
        return cls
    hints = typing.get_type_hints(cls)  # resolved here: the new class lives in no module that could resolve them
    kept = [(f.name, hints[f.name], field(default=f.default, default_factory=f.default_factory))
            for f in fields(cls) if f.name not in skip]
    if name in TARGETS:
        kept.insert(0, ("_target_", str, field(default=TARGETS[name])))
    return make_dataclass(cls.__name__, kept)


def compose_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """The real config tree, as `python -m physiotouch.train` would see it (for tests and notebooks).

    `paths.output_dir` uses Hydra's runtime, which exists only inside a Hydra app: pass paths.output_dir=DIR.
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides or []))
