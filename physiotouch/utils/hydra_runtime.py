"""Helpers for a running Hydra app that know nothing of physiotouch's settings (so that any package may use them):
the command line's overrides, and the composed config printed as a tree."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


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
