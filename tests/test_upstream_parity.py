"""The reimplementation reproduces the reference's outputs on fixed weights, inputs and masking noise.

Reads the fixture from PHYSIOTOUCH_PARITY_FIXTURE when set (other sizes, activations, mask ratios, norm_pix_loss),
else ../shared/fixtures/upstream_parity_tiny.pt. Nothing here is specific to the tiny fixture.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from physiotouch.checkpoints.reference import load_state_into
from physiotouch.models import DecoderConfig, EncoderConfig, ModelConfig, TactileVideoMAE

from .conftest import FIXTURES

FIXTURE = Path(os.environ.get("PHYSIOTOUCH_PARITY_FIXTURE", FIXTURES / "upstream_parity_tiny.pt"))
RTOL = 1e-5


def model_from_fixture(fx: dict) -> TactileVideoMAE:
    enc_fields = EncoderConfig.__dataclass_fields__
    dec_fields = DecoderConfig.__dataclass_fields__
    enc = {k: v for k, v in fx["encoder_config"].items() if k in enc_fields}
    dec = {k: v for k, v in fx["decoder_config"].items() if k in dec_fields}
    assert fx["decoder_config"].get("patch_size", enc["patch_size"]) == enc["patch_size"]
    cfg = ModelConfig(encoder=EncoderConfig(**enc), decoder=DecoderConfig(**dec), projection_dim=fx["projection_dim"],
                      mask_ratio=fx["mask_ratio"], norm_pix_loss=fx["norm_pix_loss"])
    model = TactileVideoMAE(cfg).eval()
    load_state_into(model, fx["state_dict"], str(FIXTURE))
    return model


@pytest.fixture(scope="module")
def fx():
    if not FIXTURE.is_file():
        pytest.fail(f"parity fixture {FIXTURE} is missing (set PHYSIOTOUCH_PARITY_FIXTURE or provide ../shared)")
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def outputs(fx):
    model = model_from_fixture(fx)
    with torch.no_grad():
        return {"video": model.forward_video(fx["clips"], fx["noise"]),
                "image": model.forward_image(fx["clips"], fx["noise"]),
                "features_video": model.encode(fx["clips"], "video"),
                "features_image": model.encode(fx["clips"], "image")}


def close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    theirs = torch.as_tensor(theirs, dtype=ours.dtype)
    # Relative to the tensor's scale, so that elements near zero do not demand more than float32 can give.
    scale = theirs.abs().max().clamp_min(1e-12)
    err = ((ours - theirs).abs().max() / scale).item()
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} vs {tuple(theirs.shape)}"
    assert err < RTOL, f"{what}: relative error {err:.2e} >= {RTOL}"


@pytest.mark.parametrize("key", ["loss_static", "loss_dynamic", "loss_recon", "loss_pred"])
def test_joint_losses(fx, outputs, key):
    assert outputs["video"][key].item() == pytest.approx(fx["joint"][key], rel=RTOL)


def test_dynamic_is_recon_plus_pred(outputs):
    v = outputs["video"]
    assert v["loss_dynamic"].item() == pytest.approx((v["loss_recon"] + v["loss_pred"]).item(), rel=1e-7)


def test_joint_prediction_and_mask(fx, outputs):
    close(outputs["video"]["pred"], fx["joint_pred"], "joint_pred")
    assert torch.equal(outputs["video"]["mask"], fx["mask"].to(outputs["video"]["mask"].dtype))
    keep = int(fx["noise"].shape[1] * (1 - fx["mask_ratio"]))
    assert (fx["mask"].sum(1) == fx["noise"].shape[1] - keep).all()


def test_static_mode(fx, outputs):
    assert outputs["image"]["loss_static"].item() == pytest.approx(fx["static_loss"], rel=RTOL)
    close(outputs["image"]["pred"], fx["static_pred"], "static_pred")


def test_dynamic_mode(fx, outputs):
    v = outputs["video"]
    assert (v["loss_recon"] + v["loss_pred"]).item() == pytest.approx(fx["dynamic_loss"], rel=RTOL)
    close(v["pred"], fx["dynamic_pred"], "dynamic_pred")


@pytest.mark.parametrize("path", ["video", "image"])
def test_features(fx, outputs, path):
    close(outputs[f"features_{path}"], fx[f"features_{path}"], f"features_{path}")


def test_fixed_decoder_position_embedding_matches(fx):
    model = model_from_fixture(fx)  # load_state_into checks it; check the values directly as well
    close(model.decoder_pos_embed, fx["state_dict"]["decoder_pos_embed"], "decoder_pos_embed")
