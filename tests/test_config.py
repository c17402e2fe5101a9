"""Every option of every config group composes and resolves."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from physiotouch.hydra_setup import register_with_hydra
from physiotouch.paths import CONF_DIR

GROUPS = ["data", "model", "loss", "trainer", "logger", "callbacks", "experiment", "ablation", "hparams_search",
          "debug"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_ctx():
    """One Hydra initialisation for the whole module (composing is then cheap)."""
    register_with_hydra()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def compose_config(overrides):
    return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(hydra_ctx, group, option, tmp_path):
    extra = ["data.root=/x", "data.index=/x/i.csv"] if option == "tacquad" else []
    cfg = compose_config([f"{group}={option}", f"paths.output_dir={tmp_path}", *extra])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["model"]["encoder"]["image_size"] == resolved["data"]["image_size"]
    if group == "loss":
        assert resolved["loss"]["name"] == option
    if group == "trainer" and option == "ddp":
        assert resolved["trainer"]["strategy"]["find_unused_parameters"] is False  # joint default: none unused
    if group == "hparams_search":
        assert resolved["loss"]["beta"] == pytest.approx(1 - resolved["loss"]["alpha"])


def test_ddp_searches_unused_parameters_only_for_the_alternating_scheme(hydra_ctx, tmp_path):
    cfg = compose_config(["trainer=ddp", "loss=baseline_alternating", f"paths.output_dir={tmp_path}"])
    assert cfg.trainer.strategy.find_unused_parameters is True


def test_reference_experiment_matches_the_reference_script(hydra_ctx, tmp_path):
    cfg = compose_config(["experiment=reference_balanced", f"paths.output_dir={tmp_path}"])
    assert (cfg.data.batch_size, cfg.optim.accum_iter, cfg.trainer.max_epochs, cfg.optim.warmup_epochs,
            cfg.optim.blr, cfg.loss.alpha, cfg.loss.beta, cfg.model.mask_ratio) == (8, 2, 100, 40, 1e-3, .75, .25, .75)
    assert (cfg.callbacks.periodic.every_n_epochs, cfg.callbacks.periodic.save_top_k) == (10, 2)
