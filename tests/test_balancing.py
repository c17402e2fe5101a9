"""Adaptive loss balancing: convergence to the target share, bounded learned parameters, resume exactness."""

from __future__ import annotations

import pytest
import torch

from physiotouch.training.balancing import build_balancer
from physiotouch.training.run import run_training
from physiotouch.training.settings import LossConfig


def test_auto_balanced_contributions_converge_to_the_target():
    cfg = LossConfig(balancer="auto", alpha=0.5, beta=0.5, target_share=0.5, warmup_steps=20, ema_decay=0.95)
    bal = build_balancer(cfg).train()
    for step in range(400):  # the dynamic loss runs 3.3x the static one, with some noise
        static = torch.tensor(0.3 * (1 + 0.05 * ((step * 7) % 5 - 2)))
        dynamic = torch.tensor(1.0 * (1 + 0.05 * ((step * 3) % 5 - 2)))
        _, alpha, beta, _ = bal.total(static, dynamic)
        if step == 10:
            assert (alpha.item(), beta.item()) == (0.5, 0.5)  # still warming up
    share = alpha * 0.3 / (alpha * 0.3 + beta * 1.0)
    assert share.item() == pytest.approx(0.5, abs=0.02)
    assert alpha.item() + beta.item() == pytest.approx(1.0)
    target = build_balancer(LossConfig(balancer="auto", target_share=0.3, warmup_steps=0)).train()
    for _ in range(50):
        _, a, b, _ = target.total(torch.tensor(0.3), torch.tensor(1.0))
    assert (a * 0.3 / (a * 0.3 + b)).item() == pytest.approx(0.3, abs=0.01)


def test_auto_balanced_weights_are_bounded():
    bal = build_balancer(LossConfig(balancer="auto", warmup_steps=0, alpha_min=0.1, alpha_max=0.9)).train()
    for _ in range(20):
        _, alpha, _, _ = bal.total(torch.tensor(1e-6), torch.tensor(10.0))  # wants alpha -> 1
    assert alpha.item() == pytest.approx(0.9)


def test_uncertainty_parameters_get_gradients_and_respect_bounds():
    bal = build_balancer(LossConfig(balancer="uncertainty", logvar_min=-2.0, logvar_max=2.0)).train()
    total, alpha, beta, extra = bal.total(torch.tensor(0.3, requires_grad=True), torch.tensor(1.2, requires_grad=True))
    total.backward()
    assert bal.log_var_static.grad is not None and bal.log_var_dynamic.grad is not None
    # d/ds (exp(-s) L + s) = 1 - L at s = 0
    assert bal.log_var_static.grad.item() == pytest.approx(1 - 0.3)
    with torch.no_grad():
        bal.log_var_static.fill_(10.0)
    bal.zero_grad()
    total, alpha, _, _ = bal.total(torch.tensor(0.3), torch.tensor(1.2))
    assert alpha.item() == pytest.approx(torch.exp(torch.tensor(-2.0)).item())  # clamped to the bound
    total.backward()
    assert bal.log_var_static.grad.item() == 0.0  # no push beyond the bound


def test_gradnorm_weights_learn_and_stay_normalised():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4)
    bal = build_balancer(LossConfig(balancer="gradnorm", alpha=0.5, beta=0.5)).train()
    x = torch.randn(8, 4)
    h = layer(x)
    static, dynamic = (h[:, :2] ** 2).mean(), 10 * (h[:, 2:] ** 2).mean()  # the dynamic gradient is much larger
    total, alpha, beta, balance = bal.total(static, dynamic, [layer.weight])
    total.backward()
    assert bal.task_weights.grad is not None and balance.item() > 0
    with torch.no_grad():
        bal.task_weights -= 0.1 * bal.task_weights.grad
    bal.after_step()
    w = bal.task_weights.detach()
    assert w.sum().item() == pytest.approx(1.0) and w[0] > w[1]  # the weaker-gradient static term gains weight


def test_adaptive_needs_the_joint_mode():
    with pytest.raises(ValueError, match="joint"):
        build_balancer(LossConfig(balancer="auto", mode="alternating"))


@pytest.mark.parametrize("scheme", ["auto_balanced", "uncertainty", "gradnorm"])
def test_every_adaptive_scheme_runs_fast_dev_run(small_data, tmp_path, make_cfg, scheme):
    result = run_training(make_cfg(small_data, tmp_path, f"loss={scheme}", "trainer.fast_dev_run=true"))
    assert result["metric"] is not None


@pytest.mark.parametrize("scheme", ["auto_balanced", "uncertainty"])
@pytest.mark.slow
def test_resume_restores_the_adaptive_state_exactly(small_data, tmp_path, make_cfg, scheme):
    common = (f"loss={scheme}", "loss.warmup_steps=3", "trainer.max_epochs=3", "optim.warmup_epochs=1")
    full = run_training(make_cfg(small_data, tmp_path / "full", *common))["history"]
    run_training(make_cfg(small_data, tmp_path / "cut", *common, "+trainer.max_steps=20"))
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    resumed = run_training(make_cfg(small_data, tmp_path / "cut", *common, f"ckpt_path={last}"))["history"]
    assert len(full) == len(resumed) == 4
    for a, b in zip(full, resumed):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
    assert full[-1]["epoch/alpha"] != full[1]["epoch/alpha"]  # the weights did adapt
