"""Training through the real composed config: schemes, schedule, seeds, resume, multirun layout, NaN stop."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch

from physiotouch.training.module import NonFiniteLossError, PretrainModule
from physiotouch.training.optim import base_lr, lr_at, param_groups
from physiotouch.training.run import run_training
from physiotouch.training.settings import OptimConfig

from .conftest import train_overrides


def read_metrics(out: Path) -> list[dict]:
    with (out / "csv" / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("scheme", ["equal", "balanced", "baseline_alternating"])
def test_fast_dev_run_every_scheme(small_data, tmp_path, make_cfg, scheme):
    cfg = make_cfg(small_data, tmp_path, f"loss={scheme}", "trainer.fast_dev_run=true")
    result = run_training(cfg)
    assert (tmp_path / "splits.json").is_file() and (tmp_path / "run_info.json").is_file()
    assert (tmp_path / "health.json").is_file()
    assert result["metric"] is not None and math.isfinite(result["metric"])


def test_early_stopping_and_rich_progress_bar_are_config_options(small_data, tmp_path, make_cfg):
    """lightning-hydra-template's callback options: `callbacks=early_stopping` stops once val/objective stops
    improving (patience 0 here: after the second validation at the latest), `callbacks=rich_progress_bar` trains."""
    from lightning.pytorch.callbacks import EarlyStopping

    cfg = make_cfg(small_data, tmp_path / "es", "callbacks=early_stopping", "callbacks.early_stopping.patience=0",
                   "callbacks.early_stopping.min_delta=1000", "trainer.max_epochs=6", "trainer.limit_train_batches=2",
                   "trainer.limit_val_batches=1")
    assert isinstance(hydra.utils.instantiate(cfg.callbacks.early_stopping), EarlyStopping)
    run_training(cfg)
    trained = [r for r in json.loads((tmp_path / "es" / "history.json").read_text()) if r["epoch"] >= 0]
    assert len(trained) < 6  # stopped early
    cfg = make_cfg(small_data, tmp_path / "rich", "callbacks=rich_progress_bar", "trainer.enable_progress_bar=true",
                   "trainer.fast_dev_run=true")
    assert run_training(cfg)["metric"] is not None


@pytest.mark.parametrize("ratio,mode", [(1.0, 0), (0.0, 1)])
def test_alternating_static_and_dynamic_branches(small_data, tmp_path, make_cfg, ratio, mode):
    cfg = make_cfg(small_data, tmp_path, "loss=baseline_alternating", f"loss.static_ratio={ratio}",
                   "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1")
    run_training(cfg)
    rows = [r for r in read_metrics(tmp_path) if r.get("batch/mode")]
    assert rows and {float(r["batch/mode"]) for r in rows} == {float(mode)}
    if mode == 0:  # a static batch trains the image path; no dynamic losses exist for it
        assert all(r.get("batch/loss_static") and not r.get("batch/loss_dynamic") for r in rows)
    else:
        assert all(r.get("batch/loss_dynamic") and not r.get("batch/loss_static") for r in rows)


@pytest.mark.slow
def test_lr_schedule_matches_the_reference_formula(small_data, tmp_path, make_cfg):
    cfg = make_cfg(small_data, tmp_path, "trainer.max_epochs=4", "optim.warmup_epochs=2", "optim.accum_iter=2",
                   "optim.blr=2e-3", "trainer.log_every_n_steps=1")
    run_training(cfg)
    steps_per_epoch = 10  # 4 train objects x 3 sensors x 7 windows = 84 windows, batch 8, drop_last
    peak = 2e-3 * 8 * 2 / 256
    rows = [r for r in read_metrics(tmp_path) if r.get("batch/lr")]
    assert len(rows) >= 10
    for r in rows:
        it = int(float(r["batch/iteration"]))
        epoch, batch = divmod(it, steps_per_epoch)
        batch -= batch % 2  # set every accum_iter data steps, as the reference
        expected = lr_at(epoch + batch / steps_per_epoch, peak, 0.0, 2, 4)
        assert float(r["batch/lr"]) == pytest.approx(expected, rel=1e-6), (it, r["batch/lr"], expected)


def test_lr_formula_values():
    assert lr_at(0.5, 1.0, 0.0, 2, 10) == pytest.approx(0.25)
    assert lr_at(2.0, 1.0, 0.0, 2, 10) == pytest.approx(1.0)
    assert lr_at(6.0, 1.0, 0.1, 2, 10) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(10.0, 1.0, 0.1, 2, 10) == pytest.approx(0.1)
    assert base_lr(OptimConfig(blr=1e-3, accum_iter=2), 8, 4) == pytest.approx(1e-3 * 64 / 256)
    assert base_lr(OptimConfig(lr=3e-4), 8, 4) == 3e-4


def test_parameter_groups_no_decay_on_biases_and_1d():
    module = PretrainModule(model_cfg=_tiny_cfg(), loss_cfg={"mode": "alternating"}, optim_cfg={})
    groups = param_groups(module.model.named_parameters(), 0.05)
    names = {id(p): n for n, p in module.model.named_parameters()}
    no_decay = {names[id(p)] for p in groups[0]["params"]}
    decay = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 0.05
    assert all(n.endswith(".bias") or module.model.get_parameter(n).ndim == 1 for n in no_decay)
    assert all(module.model.get_parameter(n).ndim >= 2 and not n.endswith(".bias") for n in decay)
    assert "encoder.embeddings.class_embedding" in no_decay and "mask_token" in decay
    assert not any("post_layernorm" in n for n in no_decay | decay)  # frozen: serves features only
    # The reference's own optimiser (fixture): 50 without decay, 33 with (one is its unused position table).
    ref = torch.load(Path(__file__).parents[2] / "shared/fixtures/upstream_best_tiny.pth", weights_only=False)
    ref_sizes = [len(g["params"]) for g in ref["optimizer"]["param_groups"]]
    assert ref_sizes == [len(no_decay) + 2, len(decay) + 1]  # + post_layernorm (2 tensors), + video_position_emb


def _tiny_cfg() -> dict:
    from physiotouch.models import named_model_configs

    return named_model_configs()["tiny"].to_dict()


def test_joint_mode_freezes_the_unused_image_path():
    module = PretrainModule(model_cfg=_tiny_cfg(), loss_cfg={"mode": "joint"}, optim_cfg={})
    frozen = {n for n, p in module.model.named_parameters() if not p.requires_grad}
    assert frozen == {"encoder.embeddings.patch_embedding.weight", "head_image.weight", "head_image.bias",
                      "encoder.post_layernorm.weight", "encoder.post_layernorm.bias"}


def _history(out: Path) -> list[dict]:
    from physiotouch.utils.safe_load import safe_torch_load

    return safe_torch_load(out / "checkpoints" / "last.ckpt")["physiotouch"]["history"]


@pytest.mark.slow
def test_seed_zero_is_valid_differs_from_one_and_repeats(small_data, tmp_path, make_cfg):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        out = tmp_path / name
        runs[name] = run_training(make_cfg(small_data, out, f"seed={seed}", "trainer.max_epochs=2",
                                           "trainer.limit_train_batches=4"))["history"]
    assert runs["a"] == [{**r} for r in runs["b"]]
    assert runs["a"][1]["epoch/train_loss"] != runs["c"][1]["epoch/train_loss"]
    assert runs["a"][0]["val/objective"] != runs["c"][0]["val/objective"]  # other initial weights


def test_validation_mask_is_fixed_per_clip_whatever_the_seed():
    a = PretrainModule(model_cfg=_tiny_cfg(), loss_cfg={}, optim_cfg={}, seed=0)
    b = PretrainModule(model_cfg=_tiny_cfg(), loss_cfg={}, optim_cfg={}, seed=5)
    ids = torch.tensor([11, 12, 11])
    torch.manual_seed(123)
    na = a.fixed_noise(ids)
    torch.manual_seed(456)
    assert torch.equal(na, b.fixed_noise(ids)) and torch.equal(na[0], na[2]) and not torch.equal(na[0], na[1])


@pytest.mark.slow
def test_resume_from_last_equals_an_uninterrupted_run(small_data, tmp_path, make_cfg):
    common = ("trainer.max_epochs=3", "optim.warmup_epochs=1", "optim.accum_iter=2")
    full = run_training(make_cfg(small_data, tmp_path / "full", *common))["history"]
    # the same run, stopped after two epochs (10 batches = 5 optimiser steps each), then resumed from last.ckpt
    run_training(make_cfg(small_data, tmp_path / "cut", *common, "+trainer.max_steps=10"))
    assert len(_history(tmp_path / "cut")) == 3  # initial validation + 2 epochs
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    resumed = run_training(make_cfg(small_data, tmp_path / "cut", *common, f"ckpt_path={last}"))["history"]
    assert len(resumed) == len(full) == 4
    for a, b in zip(full, resumed):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key


def test_nan_loss_stops_with_a_message_and_a_saved_checkpoint(small_data, tmp_path, make_cfg):
    cfg = make_cfg(small_data, tmp_path, "trainer.max_epochs=2", "fault_injection.nan_at_step=3")
    with pytest.raises(NonFiniteLossError, match="non-finite training loss.*nonfinite-last-good.ckpt"):
        run_training(cfg)
    saved = tmp_path / "checkpoints" / "nonfinite-last-good.ckpt"
    from physiotouch.checkpoints.format import load_model

    model, ckpt = load_model(saved)
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
def test_nan_loss_in_the_cli_gives_one_line_and_exit_code(small_data, tmp_path):
    run = subprocess.run([sys.executable, "-m", "physiotouch.train", *train_overrides(small_data, tmp_path),
                          "trainer.max_epochs=1", "fault_injection.nan_at_step=1"], capture_output=True, text=True)
    assert run.returncode == 4  # the documented code for a diverged run (physiotouch/cli.py)
    assert "error: non-finite training loss" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_multirun_seeds_land_as_jobs_of_one_folder(small_data, tmp_path):
    sweep = tmp_path / "sweep"
    overrides = [o for o in train_overrides(small_data, tmp_path) if not o.startswith("paths.output_dir")]
    run = subprocess.run([sys.executable, "-m", "physiotouch.train", "-m", "seed=1,2", f"hydra.sweep.dir={sweep}",
                          *overrides, "trainer.max_epochs=1", "trainer.limit_train_batches=2"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (sweep / "multirun.yaml").is_file()
    for job, seed in (("0", 1), ("1", 2)):
        d = sweep / job
        for name in ("run_info.json", "splits.json", "health.json", "csv/metrics.csv", ".hydra/config.yaml",
                     "checkpoints/last.ckpt"):
            assert (d / name).is_file(), d / name
        assert json.loads((d / "run_info.json").read_text())["seed"] == seed
        assert f"seed={seed}" in json.loads((d / "run_info.json").read_text())["overrides"]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_with_the_alternating_scheme(small_data, tmp_path):
    """DDP (gloo) with 2 processes: the alternating scheme needs the unused-parameter search and the same
    static/dynamic coin on every rank; run files are written once."""
    overrides = [o for o in train_overrides(small_data, tmp_path) if not o.startswith("paths.output_dir")]
    res = subprocess.run([sys.executable, "-m", "physiotouch.train", *overrides, f"hydra.run.dir={tmp_path / 'run'}",
                          "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
                          "loss=baseline_alternating", "trainer.max_epochs=2"], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("run folder:") == 1  # the summary comes from rank 0 only
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 3 and all(math.isfinite(r["val/objective"]) for r in history)
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert "trainer=ddp" in info["overrides"]
