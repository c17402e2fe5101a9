"""Each idea has one home: config defaults in the settings dataclasses (YAML holds deltas), the scheme objects and
the model's own statement of which parameters a scheme trains, the checkpoint format and the run folder."""

from __future__ import annotations

import pytest
import torch

from physiotouch.checkpoints.format import FORMAT, load_checkpoint
from physiotouch.checkpoints.io import atomic_torch_save
from physiotouch.cli import ConfigError
from physiotouch.data.settings import AugmentConfig
from physiotouch.data.splits import SplitConfig
from physiotouch.evaluation.settings import EvalConfig
from physiotouch.hydra_setup import compose_config
from physiotouch.models import ModelConfig, TactileVideoMAE
from physiotouch.models.config import BUILDER
from physiotouch.run_folder import RunDir
from physiotouch.training.balancing import build_balancer
from physiotouch.training.schemes import MODE_DYNAMIC, MODE_JOINT, MODE_STATIC, build_scheme
from physiotouch.training.settings import LossConfig, OptimConfig
from physiotouch.utils.plain import field_defaults, to_plain
from physiotouch.utils.safe_load import CheckpointError
from physiotouch.utils.settings import build_settings


def _lists(value):
    """Tuples as lists (a config node holds lists), recursively."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return compose_config([f"paths.output_dir={tmp_path_factory.mktemp('out')}"])


def test_the_default_run_takes_every_default_from_its_dataclass(cfg):
    """The YAML of the default options holds no copy of a dataclass default: what composes is the dataclass's."""
    assert to_plain(cfg.model) == {"_target_": BUILDER, **_lists(field_defaults(ModelConfig))}
    assert to_plain(cfg.loss) == _lists(field_defaults(LossConfig))
    assert to_plain(cfg.optim) == _lists(field_defaults(OptimConfig))
    assert to_plain(cfg.augment) == _lists(field_defaults(AugmentConfig))
    split = to_plain(cfg.data.split)
    assert split == {**field_defaults(SplitConfig), "exclude": ["cylinder", "ring", "ridged", "sphere"]}  # tested
    evaluation = to_plain(cfg.eval)
    assert evaluation == {**_lists(field_defaults(EvalConfig)), "mask_ratio": cfg.validation.mask_ratio}


def test_a_size_is_its_deltas_from_the_defaults(tmp_path):
    big = compose_config(["model=vit_l14", f"paths.output_dir={tmp_path}"]).model
    defaults = field_defaults(ModelConfig)
    assert big.encoder.hidden_size == 1024 and big.decoder.num_hidden_layers == 8 and big.projection_dim == 768
    assert big.encoder.hidden_act == defaults["encoder"]["hidden_act"] and big.mask_ratio == defaults["mask_ratio"]


def test_a_model_config_never_names_another_builder():
    with pytest.raises(ConfigError, match="built by physiotouch.models.build_model only"):
        build_settings(ModelConfig, {"_target_": "os.system"}, "model")
    assert build_settings(ModelConfig, {"_target_": BUILDER}, "model") == ModelConfig()


def test_a_checkpoint_of_another_format_is_refused(tmp_path):
    path = tmp_path / "other.ckpt"
    atomic_torch_save({"format": "someone-else-2", "state_dict": {}, "hyper_parameters": {"model_cfg": {}}}, path)
    with pytest.raises(CheckpointError, match="format 'someone-else-2'"):
        load_checkpoint(path)
    atomic_torch_save({"format": FORMAT, "state_dict": {}, "hyper_parameters": {"model_cfg": {}}}, path)
    assert load_checkpoint(path)["format"] == FORMAT


def test_the_model_says_which_modules_each_scheme_leaves_unused():
    model = TactileVideoMAE(ModelConfig())
    joint = build_scheme(LossConfig(), build_balancer(LossConfig()), model)
    alternating = build_scheme(LossConfig(mode="alternating"), build_balancer(LossConfig(mode="alternating")), model)
    assert model.unused_modules(joint.paths) == [model.encoder.post_layernorm, model.encoder.embeddings.patch_embedding,
                                                 model.head_image]
    assert model.unused_modules(alternating.paths) == [model.encoder.post_layernorm]
    assert model.shared_decoder_weight() is model.decoder_blocks[-1].mlp.fc2.weight


def test_the_schemes_turn_one_batch_into_the_reference_losses():
    torch.manual_seed(0)
    model = TactileVideoMAE(ModelConfig())
    clips, noise = torch.randn(2, 4, 3, 56, 56), torch.rand(2, model.num_patches)
    passes = {"video": model.forward_video, "image": model.forward_image}
    cfg = LossConfig(alpha=0.75, beta=0.25, pred_weight=0.5)
    step = build_scheme(cfg, build_balancer(cfg), model).step(passes, clips, noise, torch.Generator())
    out = model.forward_video(clips, noise)
    assert step.mode == MODE_JOINT
    dynamic = out["loss_recon"] + 0.5 * out["loss_pred"]  # pred_weight scales the frame-4 term
    torch.testing.assert_close(step.total, 0.75 * out["loss_static"] + 0.25 * dynamic)
    for ratio, mode, expected in ((1.0, MODE_STATIC, model.forward_image(clips, noise)["loss_static"]),
                                  (0.0, MODE_DYNAMIC, out["loss_recon"] + out["loss_pred"])):
        cfg = LossConfig(mode="alternating", static_ratio=ratio)
        step = build_scheme(cfg, build_balancer(cfg), model).step(passes, clips, noise, torch.Generator())
        assert step.mode == mode
        torch.testing.assert_close(step.total, expected)


def test_a_run_folder_names_its_own_files(tmp_path):
    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    (run / RunDir.CONFIG).write_text("seed: 3\n")
    best = run.checkpoints / "best-epoch002.ckpt"
    best.write_bytes(b"x")
    run.write_json(RunDir.SUMMARY, {"best_checkpoint": "/elsewhere/best-epoch002.ckpt"})
    assert RunDir.of_checkpoint(best) == RunDir(run.path.resolve())
    assert run.best_checkpoint() == best  # the name, looked up in the run's own checkpoints/
    assert run.config() == {"seed": 3} and run.summary()["best_checkpoint"].endswith("best-epoch002.ckpt")
    assert RunDir.of_checkpoint(tmp_path / "loose.ckpt") is None


def test_no_package_imports_one_that_imports_it_back():
    """The package graph (each folder of physiotouch/ and each top-level module as one node) has no cycle: no lower
    module imports a higher one (e.g. hydra_setup -> training -> hydra_setup, models -> checkpoints -> models)."""
    import ast
    from collections import defaultdict
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "physiotouch"
    edges: dict[str, set[str]] = defaultdict(set)
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        unit = parts[0] if len(parts) > 1 else parts[0][:-3]
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            edges[unit] |= {n.split(".")[1] for n in names if n.startswith("physiotouch.")} - {unit}

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(n == goal or (n not in seen and not seen.add(n) and reaches(n, goal, seen)) for n in edges[start])

    cycles = sorted((a, b) for a in list(edges) for b in edges[a] if reaches(b, a, set()))
    assert not cycles, cycles
