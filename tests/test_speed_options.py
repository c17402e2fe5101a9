"""The speed options (issue 14) change how fast, never what is computed: compile, activation checkpointing, the
attention kernel, the weight average, evaluation passes and progress bars."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from physiotouch.hydra_setup import compose_config
from physiotouch.models import ModelConfig, TactileVideoMAE
from physiotouch.models.transformer import attention_kernel
from physiotouch.training.run import run_training
from physiotouch.utils.settings import build_settings

from .conftest import train_overrides


def _batch_losses(run: Path) -> list[float]:
    with (run / "csv" / "metrics.csv").open() as fh:
        return [float(r["batch/loss_total"]) for r in csv.DictReader(fh) if r.get("batch/loss_total")]


@pytest.mark.slow
def test_compiled_training_gives_the_eager_losses(small_data, tmp_path):
    losses = {}
    for compiled in (False, True):
        out = tmp_path / f"compile-{compiled}"
        run_training(compose_config(train_overrides(small_data, out, "trainer.max_epochs=1",
                                                    "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
                                                    f"model.compile={str(compiled).lower()}")))
        losses[compiled] = _batch_losses(out)
    assert len(losses[True]) == 3
    assert losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-6)


def _model(**encoder) -> TactileVideoMAE:
    torch.manual_seed(0)
    return TactileVideoMAE(build_settings(ModelConfig, {"encoder": {"hidden_act": "gelu", **encoder}}, "model"))


def _loss_and_grads(model: TactileVideoMAE, clips, noise):
    model.train()
    out = model.forward_video(clips, noise)
    total = out["loss_static"] + out["loss_dynamic"]
    total.backward()
    return total.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_and_the_plain_attention_change_nothing():
    clips, noise = torch.randn(2, 4, 3, 56, 56), torch.rand(2, 16)
    loss, grads = _loss_and_grads(_model(), clips, noise)
    for model, kernel in ((_model(gradient_checkpointing=True), "sdpa"), (_model(), "plain")):
        with attention_kernel(kernel):
            other_loss, other_grads = _loss_and_grads(model, clips, noise)
        assert other_loss == pytest.approx(loss, rel=1e-5)
        for name, grad in grads.items():
            assert torch.allclose(other_grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_ema_checkpoints_hold_the_averaged_weights_and_evaluation_uses_them(small_data, tmp_path):
    from physiotouch.checkpoints.format import load_model

    out = tmp_path / "ema"
    run_training(compose_config(train_overrides(small_data, out, "trainer.max_epochs=1", "callbacks=ema",
                                                 "callbacks.ema.decay=0.5")))
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    averaged, current = ckpt["state_dict"], ckpt["current_model_state"]
    key = "model.head_video.weight"
    assert not torch.equal(averaged[key], current[key])  # the average is not the last step's weights
    model, _ = load_model(out / "checkpoints" / "last.ckpt")
    assert torch.equal(model.state_dict()[key.removeprefix("model.")], averaged[key])


@pytest.mark.slow
def test_evaluation_encodes_each_split_and_perturbation_once(trained_run, tmp_path):
    from physiotouch.checkpoints.format import load_model
    from physiotouch.data import build_datamodule
    from physiotouch.evaluation import encoder
    from physiotouch.evaluation.run import EvalConfig, run_evaluation
    from physiotouch.run_folder import read_yaml

    cfg = read_yaml(trained_run / "config_resolved.yaml")
    model, _ = load_model(trained_run / "checkpoints" / "last.ckpt")
    datamodule = build_datamodule(cfg["data"])
    datamodule.setup()
    strengths = {"noise": [0.05, 0.1], "brightness": [0.8]}
    encoder.PASSES.clear()
    run_evaluation(model, datamodule, EvalConfig(robustness={"enabled": True, "strengths": strengths}), tmp_path)
    expected = {(s, p): 1 for s in ("train", "val") for p in ("clean", "noise_0.05", "noise_0.1", "brightness_0.8")}
    expected.update({(f"{s}:{c}", "clean"): 1 for s in ("train", "val") for c in ("raw_pixels", "untrained")})
    assert dict(encoder.PASSES) == expected  # the controls too: one pass for the three pixel controls, one untrained


@pytest.mark.slow
def test_data_check_shows_counts_and_rate(small_data):
    res = subprocess.run([sys.executable, "-m", "physiotouch.data", "check", "--root", str(small_data), "--index",
                          str(small_data / "index.csv")], capture_output=True, text=True,
                         env={**os.environ, "PHYSIOTOUCH_PROGRESS": "1"})
    assert res.returncode == 0, res.stderr
    n = len((small_data / "index.csv").read_text().splitlines())
    assert "checking sequences" in res.stderr and f"{n}/{n}" in res.stderr and "it/s" in res.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_adamw_is_fused_and_batches_are_pinned(small_data, tmp_path):
    from physiotouch.training.optim import build_optimizer
    from physiotouch.training.settings import OptimConfig

    model = _model().cuda()
    assert build_optimizer(model, OptimConfig(), 1e-3).defaults["fused"]
    cfg = compose_config(train_overrides(small_data, tmp_path))
    assert cfg.data.pin_memory == "auto"
