"""TactileVideoMAE pieces: patch layout, masking, losses, sizes; the reference size on the CPU."""

from __future__ import annotations

import pytest
import torch

from physiotouch.hydra_setup import compose_config
from physiotouch.models import ModelConfig, TactileVideoMAE, build_model, named_model_configs
from physiotouch.models.transformer import sincos_pos_embed_2d
from physiotouch.utils.settings import build_settings


@pytest.fixture
def tiny() -> TactileVideoMAE:
    torch.manual_seed(0)
    return TactileVideoMAE(named_model_configs()["tiny"]).eval()


def test_patchify_layout_and_inverse(tiny):
    clips = torch.randn(2, 4, 3, 56, 56)
    patches = tiny.patchify(clips)  # [B, L, T, p*p*3]
    assert patches.shape == (2, 16, 4, 14 * 14 * 3)
    # patch 1 = row 0, column 1; inside it, pixel (0, 0) with its 3 channels comes first, channel last
    assert torch.equal(patches[0, 1, 2, :3], clips[0, 2, :, 0, 14])
    assert torch.equal(patches[0, 4, 3, 3:6], clips[0, 3, :, 14, 1])
    assert torch.equal(tiny.unpatchify(patches), clips)


def test_random_masking_is_one_tube_per_patch(tiny):
    tokens = torch.randn(3, 16, 8)
    noise = torch.rand(3, 16)
    kept, mask, restore = tiny.random_masking(tokens, 0.75, noise)
    assert kept.shape == (3, 4, 8) and mask.shape == (3, 16)
    assert (mask.sum(1) == 12).all()
    # kept tokens are those with the smallest noise
    smallest = noise.argsort(1)[:, :4]
    assert torch.equal(torch.gather(tokens, 1, smallest[..., None].expand(-1, -1, 8)), kept)
    assert torch.equal(mask.gather(1, smallest), torch.zeros(3, 4))


def test_losses_follow_the_reference_definitions(tiny):
    clips = torch.randn(2, 4, 3, 56, 56)
    with torch.no_grad():
        out = tiny.forward_video(clips, torch.rand(2, 16))
    err = (out["pred"] - tiny.patchify(clips)) ** 2
    m = out["mask"]
    assert out["loss_static"].item() == pytest.approx(((err[:, :, 0].mean(-1) * m).sum() / m.sum()).item(), rel=1e-6)
    assert out["loss_recon"].item() == pytest.approx(((err[:, :, :3].mean((-1, -2)) * m).sum() / m.sum()).item(),
                                                     rel=1e-6)
    assert out["loss_pred"].item() == pytest.approx(err[:, :, 3].mean().item(), rel=1e-6)
    assert torch.equal(out["loss_dynamic"], out["loss_recon"] + out["loss_pred"])


def test_per_clip_losses_and_the_objective_have_one_definition(tiny):
    """Validation, evaluation and the release score clips with the model's own per-clip losses and objective: with
    a fixed mask ratio, their mean is the batch loss of forward_loss."""
    clips = torch.randn(3, 4, 3, 56, 56)
    noise = tiny.fixed_mask_noise(torch.tensor([5, 6, 7]), tiny.num_patches)
    assert torch.equal(noise, tiny.fixed_mask_noise(torch.tensor([5, 6, 7]), tiny.num_patches))  # seeded by the clip
    with torch.no_grad():
        out = tiny.forward_video(clips, noise)
        per_clip = tiny.per_clip_losses(tiny.targets(clips), out["pred"], out["mask"])
    for key in ("loss_static", "loss_recon", "loss_pred", "loss_dynamic"):
        assert per_clip[key].shape == (3,)
        assert per_clip[key].mean().item() == pytest.approx(out[key].item(), rel=1e-5)
    assert tiny.objective(per_clip).mean().item() == pytest.approx(tiny.objective(out).item(), rel=1e-5)
    assert torch.equal(tiny.objective(out), out["loss_static"] + out["loss_dynamic"])


def test_one_tube_embedding_serves_the_unmasked_features_and_the_masked_pass(tiny):
    """The evaluation embeds each clip once for its features and its errors (encode_tokens, forward_video's
    `tokens`): the same values as the two passes alone, and the target forward_video returns is the one it scored."""
    clips = torch.randn(3, 4, 3, 56, 56)
    noise = torch.rand(3, 16)
    with torch.no_grad():
        tokens = tiny.embed_video(clips)
        alone, shared = tiny.forward_video(clips, noise), tiny.forward_video(clips, noise, tokens=tokens)
        assert torch.equal(tiny.encode_tokens(tokens), tiny.encode(clips, "video"))
        assert torch.equal(tiny.encode_tokens(tiny.embed_image(clips[:, 0])), tiny.encode(clips, "image"))
    for key in ("loss_static", "loss_recon", "loss_pred", "pred", "mask", "target"):
        assert torch.equal(alone[key], shared[key]), key
    assert torch.equal(alone["target"], tiny.targets(clips))


def test_norm_pix_targets_are_normalised_per_patch_and_frame():
    cfg = named_model_configs()["tiny"]
    cfg.norm_pix_loss = True
    target = TactileVideoMAE(cfg).targets(torch.rand(2, 4, 3, 56, 56) * 5 + 2)
    assert target.mean(-1).abs().max() < 1e-4
    assert (target.var(-1) - 1).abs().max() < 1e-3


def test_masking_ratio_and_noise_change_the_mask(tiny):
    clips = torch.randn(1, 4, 3, 56, 56)
    a, b = tiny.forward_video(clips, torch.rand(1, 16)), tiny.forward_video(clips, torch.rand(1, 16))
    assert not torch.equal(a["mask"], b["mask"])


def test_sincos_embedding_shape_and_class_row():
    emb = sincos_pos_embed_2d(32, 4)
    assert emb.shape == (17, 32) and torch.equal(emb[0], torch.zeros(32))


def test_gradients_reach_every_trained_parameter(tiny):
    out = tiny.train().forward_video(torch.randn(2, 4, 3, 56, 56))
    (out["loss_static"] + out["loss_dynamic"]).backward()
    unused = {n for n, p in tiny.named_parameters() if p.grad is None}
    # The video pass never touches the image path (the reference's joint mode does not train it), and the
    # post-layernorm serves only the unmasked features.
    assert unused == {"encoder.embeddings.patch_embedding.weight", "head_image.weight", "head_image.bias",
                      "encoder.post_layernorm.weight", "encoder.post_layernorm.bias"}


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="image_size"):
        build_settings(ModelConfig, {"encoder": {"image_size": 50, "patch_size": 14}}, "model")
    with pytest.raises(ValueError, match="unknown key"):
        build_settings(ModelConfig, {"encoder": {"hiden_size": 3}}, "model")
    with pytest.raises(ValueError, match="clip_path"):
        build_settings(ModelConfig, {"encoder": {"init": "clip"}}, "model")


def test_hydra_model_group_builds_models(tmp_path):
    cfg = compose_config(["model=tiny", f"paths.output_dir={tmp_path}"])
    import hydra

    model = hydra.utils.instantiate(cfg.model)
    assert isinstance(model, TactileVideoMAE) and model.num_patches == 16


@pytest.mark.slow
def test_vit_l14_forward_backward_on_cpu(tmp_path):
    """The reference size: CLIP ViT-L/14 vision tower (~303 M parameters) plus the 512x8 decoder, batch 1."""
    torch.manual_seed(0)
    cfg = compose_config(["model=vit_l14", f"paths.output_dir={tmp_path}"]).model
    model = build_model(**cfg)
    encoder = sum(p.numel() for p in model.encoder.parameters())
    assert 302e6 < encoder < 305e6, encoder  # HF CLIP ViT-L/14 vision_model: 303.18 M
    decoder = sum(p.numel() for n, p in model.named_parameters()
                  if n.startswith(("decoder_", "mask_token", "head_")))
    layer = 4 * 512 * 512 + 4 * 512 + 2 * 512 * 2048 + 2048 + 512 + 4 * 512
    assert decoder == 8 * layer + 2 * 512 + (768 * 512 + 512) + 512 + (512 * 588 + 588) + (512 * 2352 + 2352)
    out = model.forward_video(torch.randn(1, 4, 3, 224, 224))
    assert out["pred"].shape == (1, 256, 4, 588) and out["mask"].sum() == 256 - 64
    out["loss_static"].add(out["loss_dynamic"]).backward()
    assert model.video_patch_embed.weight.grad is not None
    assert model.encoder.encoder.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
