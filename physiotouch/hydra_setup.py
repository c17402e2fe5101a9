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



def task_overrides() -> list[str]:
    """The command line's overrides of the running Hydra app (none when composed outside one, as in tests)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # no Hydra app is running
        return []


def print_config(cfg: DictConfig) -> None:
    """The composed config as a tree, one branch per config group (`extras.print_config`)."""
    from rich import print as rich_print
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if OmegaConf.is_config(value) else f"{value}\n"
        tree.add(str(key)).add(Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default"))
    rich_print(tree)
