"""Reference checkpoints, conversion, local CLIP directories, and refusing pickled code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from physiotouch.checkpoints.format import load_model
from physiotouch.checkpoints.reference import load_upstream_checkpoint
from physiotouch.models import TactileVideoMAE, named_model_configs
from physiotouch.models.clip_init import load_clip_into
from physiotouch.utils.safe_load import CheckpointError, safe_torch_load

from .conftest import FIXTURES

BEST = FIXTURES / "upstream_best_tiny.pth"
PARITY = FIXTURES / "upstream_parity_tiny.pt"
EXPECTED = {"loss_static": 1.341387391090393, "loss_dynamic": 2.7041983604431152,
            "loss_recon": 1.3336237668991089, "loss_pred": 1.3705745935440063}


def losses(model: TactileVideoMAE) -> dict[str, float]:
    fx = torch.load(PARITY, weights_only=True)
    with torch.no_grad():
        out = model.eval().forward_video(fx["clips"], fx["noise"])
    return {k: out[k].item() for k in EXPECTED}


def test_reference_best_checkpoint_gives_the_listed_losses():
    ck = load_upstream_checkpoint(BEST)
    assert (ck.epoch, ck.scheme) == (9, "balanced")
    assert (ck.settings["alpha"], ck.settings["beta"], ck.model_cfg.mask_ratio) == (0.75, 0.25, 0.75)
    assert ck.model_cfg.encoder == named_model_configs()["tiny"].encoder  # size inferred from the weights
    assert losses(ck.model) == pytest.approx(EXPECTED, rel=1e-5)


@pytest.mark.slow
def test_convert_round_trip(tmp_path):
    new = tmp_path / "converted.ckpt"
    run = subprocess.run([sys.executable, "-m", "physiotouch.legacy", "convert", str(BEST), str(new)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    model, ckpt = load_model(new)
    assert ckpt["hyper_parameters"]["loss_cfg"]["alpha"] == 0.75
    assert ckpt["physiotouch"]["upstream_epoch"] == 9
    assert losses(model) == pytest.approx(EXPECTED, rel=1e-5)


def test_reference_file_given_where_ours_is_expected_names_the_fix():
    with pytest.raises(CheckpointError, match="physiotouch.legacy convert"):
        load_model(BEST)


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Exploit(marker)}, evil)
    for loader in (safe_torch_load, load_model, load_upstream_checkpoint):
        with pytest.raises(CheckpointError, match="refused"):
            loader(evil)
    assert not marker.exists()


def test_corrupt_and_empty_checkpoints_are_named(tmp_path):
    empty, cut = tmp_path / "empty.ckpt", tmp_path / "cut.ckpt"
    empty.write_bytes(b"")
    cut.write_bytes(BEST.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="empty.ckpt.*empty"):
        safe_torch_load(empty)
    with pytest.raises(CheckpointError, match="cut.ckpt.*corrupt"):
        safe_torch_load(cut)


# -------------------------------------------------------------------------------------------------------------
# local CLIP directories, written here from tiny random Hugging Face models
transformers = pytest.importorskip("transformers")


def _vision_config():
    return transformers.CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, image_size=56, patch_size=14, projection_dim=48,
                                         hidden_act="gelu", layer_norm_eps=1e-5)


@pytest.mark.parametrize("layout", ["full", "vision"])
@pytest.mark.parametrize("safe", [True, False])
def test_clip_directory_loads_and_matches_hugging_face(tmp_path, layout, safe):
    torch.manual_seed(0)
    vcfg = _vision_config()
    if layout == "full":
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100,
                    bos_token_id=0, eos_token_id=1, pad_token_id=1)
        hf = transformers.CLIPModel(transformers.CLIPConfig(vision_config=vcfg.to_dict(), text_config=text,
                                                            projection_dim=48))
        tower = hf.vision_model
    else:
        hf = transformers.CLIPVisionModel(vcfg)
        tower = hf
    if safe:
        hf.save_pretrained(tmp_path)
    else:  # the older layout: a pickled state dict (transformers 5 writes safetensors only)
        hf.config.save_pretrained(tmp_path)
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    assert (tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")).is_file()

    model = TactileVideoMAE(named_model_configs()["tiny"]).eval()
    report = load_clip_into(model, tmp_path, video_embed_from_2d=True)
    assert report["projection"] == (layout == "full")
    frames = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        ref = tower(pixel_values=frames).last_hidden_state
        tokens = model.embed_image(frames)
        x = torch.cat([model.encoder.class_token(2), tokens], 1)
        ours = model.encoder(x)
        ours_post = model.encoder.post_layernorm(ours[:, 0])
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(ours_post, tower(pixel_values=frames).pooler_output, atol=1e-5)
    if layout == "full":
        with torch.no_grad():
            assert torch.allclose(model.encode(frames[:, None], "image"), hf.visual_projection(ours_post), atol=1e-5)
    # AnyTouch-style tube init: a still clip gives exactly CLIP's patch tokens.
    still = frames[:, None].expand(-1, 4, -1, -1, -1)
    with torch.no_grad():
        assert torch.allclose(model.embed_video(still), model.embed_image(frames), atol=1e-5)


def test_clip_directory_errors_name_the_folder(tmp_path):
    model = TactileVideoMAE(named_model_configs()["tiny"])
    with pytest.raises(CheckpointError, match="does not exist"):
        load_clip_into(model, tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="neither model.safetensors nor pytorch_model.bin"):
        load_clip_into(model, tmp_path)
    wrong = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=56,
        patch_size=14))
    wrong.save_pretrained(tmp_path / "wrong")
    with pytest.raises(CheckpointError, match=r"wrong.*hidden_size: CLIP 32 vs config 64"):
        load_clip_into(model, tmp_path / "wrong")


def test_clip_init_through_the_config(tmp_path):
    transformers.CLIPVisionModel(_vision_config()).save_pretrained(tmp_path)
    from physiotouch.hydra_setup import compose_config
    from physiotouch.models import build_model

    cfg = compose_config(["model=tiny", "model.encoder.init=clip", f"model.encoder.clip_path={tmp_path}",
                          f"paths.output_dir={tmp_path / 'out'}"])
    model = build_model(**cfg.model)
    from safetensors.torch import load_file

    state = load_file(tmp_path / "model.safetensors")
    assert torch.equal(model.encoder.pre_layrnorm.weight, state["pre_layrnorm.weight"])


@pytest.mark.parametrize("kind", ["converted", "reference"])
@pytest.mark.slow
def test_training_starts_from_reference_weights(small_data, tmp_path, make_cfg, kind):
    from physiotouch.training.run import run_training

    init = BEST
    if kind == "converted":
        init = tmp_path / "converted.ckpt"
        subprocess.run([sys.executable, "-m", "physiotouch.legacy", "convert", str(BEST), str(init)], check=True,
                       capture_output=True)
    out = tmp_path / "run"
    # Learning rates must be > 0 (config_checks); 1e-30 moves no float32 weight of this size by one ulp.
    run_training(make_cfg(small_data, out, f"init_from={init}", "trainer.max_epochs=1", "optim.blr=1e-30",
                          "optim.weight_decay=0"))
    model, _ = load_model(out / "checkpoints" / "last.ckpt")
    reference = load_upstream_checkpoint(BEST).model
    for (name, ours), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(ours, theirs), name  # lr ~0: the weights are exactly the reference's
