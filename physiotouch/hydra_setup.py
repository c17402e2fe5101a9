"""Hydra / OmegaConf glue: the resolvers the config tree uses, and composing it outside a Hydra app (tests)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from physiotouch.paths import CONF_DIR, REPO_DIR


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("physiotouch_root"):
        OmegaConf.register_new_resolver("physiotouch_root", lambda: str(REPO_DIR))
    if not OmegaConf.has_resolver("physiotouch_is_alternating"):
        OmegaConf.register_new_resolver("physiotouch_is_alternating", lambda mode: mode == "alternating")
    if not OmegaConf.has_resolver("physiotouch_one_minus"):
        OmegaConf.register_new_resolver("physiotouch_one_minus", lambda x: round(1.0 - float(x), 12))


def compose_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """The real config tree, as `python -m physiotouch.train` would see it (for tests and notebooks).

    `paths.output_dir` uses Hydra's runtime, which exists only inside a Hydra app: pass paths.output_dir=DIR.
    """
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides or []))

