"""TactileVideoMAE: the PhysioTouch Stage-1 masked autoencoder, reimplemented from the reference's description.

Two input paths share one CLIP encoder and one decoder trunk:
- video (dynamic / joint): frames 1-3 -> one Conv3d "tube" token per spatial patch; the head predicts all 4
  frames of every patch (frames 1-3 reconstructed, frame 4 predicted).
- image (static, alternating mode only): frame 1 -> CLIP's Conv2d patch embedding; the head predicts frame 1.

Shapes: B batch, T=4 frames, C=3 channels, H=W=image_size, p patch size, L=(H/p)² patches, K kept patches,
D encoder width, P projection_dim, Dd decoder width, V=p·p·3 values per patch and frame.
"""

from __future__ import annotations

import torch
from torch import nn

from .clip_encoder import ClipVisionEncoder
from .config import ModelConfig
from .transformer import TransformerBlock, init_linear_and_norm, init_patch_conv, sincos_pos_embed_2d

NUM_FRAMES = 4  # frames 1-3 are seen, frame 4 is predicted
NUM_INPUT_FRAMES = 3


class TactileVideoMAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        enc, dec = cfg.encoder, cfg.decoder
        p, values = enc.patch_size, enc.patch_size**2 * enc.num_channels
        self.patch_size = p
        self.num_patches = enc.num_patches

        # --- encoder side ---------------------------------------------------------------------------------
        self.encoder = ClipVisionEncoder(enc)
        # Layout trap, kept on purpose (see the reference): the clip [B, T=3, C=3, H, W] enters the Conv3d as it is,
        # so the Conv3d's channel axis runs over the 3 frames and its depth axis over R, G, B.
        self.video_patch_embed = nn.Conv3d(NUM_INPUT_FRAMES, enc.hidden_size, kernel_size=(enc.num_channels, p, p),
                                           stride=(enc.num_channels, p, p), bias=False)
        self.projection = nn.Linear(enc.hidden_size, cfg.projection_dim, bias=False)

        # --- decoder side ---------------------------------------------------------------------------------
        self.decoder_embed = nn.Linear(cfg.projection_dim, dec.hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec.hidden_size))
        # Fixed, not trained; a buffer so it moves with the model and is saved, but never optimised.
        self.register_buffer("decoder_pos_embed", sincos_pos_embed_2d(dec.hidden_size, enc.grid_size)[None])
        self.decoder_blocks = nn.ModuleList(
            TransformerBlock(dec.hidden_size, dec.num_attention_heads, dec.intermediate_size, dec.hidden_act,
                             dec.layer_norm_eps, dec.qkv_bias)
            for _ in range(dec.num_hidden_layers)
        )
        self.decoder_norm = nn.LayerNorm(dec.hidden_size, eps=dec.layer_norm_eps)
        self.head_image = nn.Linear(dec.hidden_size, values)  # static path: frame 1
        self.head_video = nn.Linear(dec.hidden_size, NUM_FRAMES * values)  # video path: frames 1-4
        self._init_weights()

    def _init_weights(self) -> None:
        self.apply(init_linear_and_norm)
        init_patch_conv(self.video_patch_embed.weight)
        init_patch_conv(self.encoder.embeddings.patch_embedding.weight)
        nn.init.normal_(self.mask_token, std=0.02)

    # ----------------------------------------------------------------------------------------------------------
    # patches
    def patchify(self, clips: torch.Tensor) -> torch.Tensor:
        """[B, T, C, H, W] -> [B, L, T, p·p·C]; patches row-major, pixels row-major with the channel last."""
        b, t, c, h, w = clips.shape
        p = self.patch_size
        x = clips.reshape(b, t, c, h // p, p, w // p, p)
        x = torch.einsum("ntchpwq->nhwtpqc", x)
        return x.reshape(b, (h // p) * (w // p), t, p * p * c)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """[B, L, T, p·p·C] -> [B, T, C, H, W] (inverse of `patchify`, for pictures)."""
        b, n, t, v = patches.shape
        p = self.patch_size
        g, c = int(round(n**0.5)), v // (p * p)
        x = patches.reshape(b, g, g, t, p, p, c)
        x = torch.einsum("nhwtpqc->ntchpwq", x)
        return x.reshape(b, t, c, g * p, g * p)

    # ----------------------------------------------------------------------------------------------------------
    # encoder
    def embed_video(self, clips: torch.Tensor) -> torch.Tensor:
        """[B, >=3, C, H, W] -> tube tokens [B, L, D] from frames 1-3 (+ patch positions)."""
        x = self.video_patch_embed(clips[:, :NUM_INPUT_FRAMES])  # [B, D, 1, H/p, W/p]
        x = x.flatten(2).transpose(1, 2)  # [B, L, D]
        return x + self.encoder.patch_pos_embed()

    def embed_image(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> patch tokens [B, L, D] (+ patch positions)."""
        x = self.encoder.embeddings.patch_embedding(frames)  # [B, D, H/p, W/p]
        x = x.flatten(2).transpose(1, 2)  # [B, L, D]
        return x + self.encoder.patch_pos_embed()

    @staticmethod
    def random_masking(x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
        """Keep int(L·(1-mask_ratio)) tokens per sample: those with the smallest noise.

        x [B, L, D] -> kept [B, K, D], mask [B, L] (1 = removed), ids_restore [B, L].
        One mask per spatial patch: for video tokens it is a tube through all frames.
        """
        b, n, d = x.shape
        keep = int(n * (1 - mask_ratio))
        if noise is None:
            noise = torch.rand(b, n, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        mask = torch.ones(b, n, device=x.device, dtype=x.dtype)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return kept, mask, ids_restore

    @staticmethod
    def fixed_mask_noise(clip_ids: torch.Tensor, num_patches: int) -> torch.Tensor:
        """The masking noise of each clip's fixed validation mask, seeded by the clip alone: the same mask for every
        run, seed and scheme (validation, evaluation and the release all use it). -> [B, num_patches] on the CPU."""
        return torch.stack([torch.rand(num_patches, generator=torch.Generator().manual_seed(int(c)))
                            for c in clip_ids.tolist()])

    def forward_encoder(self, tokens: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
        """tokens [B, L, D] -> latent [B, 1+K, P], mask [B, L], ids_restore [B, L]."""
        kept, mask, ids_restore = self.random_masking(tokens, mask_ratio, noise)
        x = torch.cat([self.encoder.class_token(kept.shape[0]).to(kept.dtype), kept], dim=1)  # [B, 1+K, D]
        x = self.encoder(x)  # last hidden state, no post-layernorm
        return self.projection(x), mask, ids_restore  # [B, 1+K, P]

    # ----------------------------------------------------------------------------------------------------------
    # decoder
    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor, head: nn.Linear) -> torch.Tensor:
        """latent [B, 1+K, P] -> per-patch values [B, L, head.out_features]."""
        x = self.decoder_embed(latent)  # [B, 1+K, Dd]
        b, kept1, dd = x.shape
        mask_tokens = self.mask_token.to(x.dtype).expand(b, ids_restore.shape[1] + 1 - kept1, dd)
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)  # [B, L, Dd], kept first, then mask tokens
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dd))  # unshuffle
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed.to(x.dtype)  # [B, 1+L, Dd]
        for block in self.decoder_blocks:
            x = block(x)
        x = head(self.decoder_norm(x))
        return x[:, 1:]  # drop the class token

    # ----------------------------------------------------------------------------------------------------------
    # losses
    def patch_statistics(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, T, C, H, W] -> patches [B, L, T, V] and their mean and std per patch and frame [B, L, T, 1] (the
        norm_pix_loss normalisation)."""
        target = self.patchify(clips.float())
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)  # unbiased, as the reference
        return target, mean, (var + 1.0e-6) ** 0.5

    def targets(self, clips: torch.Tensor) -> torch.Tensor:
        """[B, 4, C, H, W] -> [B, L, 4, V], normalised per patch and frame when norm_pix_loss is on."""
        if not self.cfg.norm_pix_loss:
            return self.patchify(clips.float())
        target, mean, std = self.patch_statistics(clips)
        return (target - mean) / std

    def prediction_pixels(self, clips: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Predictions [B, L, 4, V] in the clips' (normalised) pixel space, for pictures: with norm_pix_loss they
        are per-patch normalised, so they take the truth's statistics."""
        if not self.cfg.norm_pix_loss:
            return pred
        _, mean, std = self.patch_statistics(clips)
        return pred * std + mean

    @staticmethod
    def masked_mean(per_patch: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean of [B, L] values over the masked (removed) patches."""
        return (per_patch * mask).sum() / mask.sum()

    @staticmethod
    def patch_errors(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """The one loss formula: mean squared error over each patch's values (in float32 under mixed precision).
        target, pred [..., V] -> [...]."""
        return ((pred.float() - target) ** 2).mean(dim=-1)

    def forward_loss(self, target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Joint losses from one video pass. target, pred [B, L, 4, V]; mask [B, L]."""
        err = self.patch_errors(target, pred)  # [B, L, 4]
        loss_static = self.masked_mean(err[:, :, 0], mask)
        loss_recon = self.masked_mean(err[:, :, :NUM_INPUT_FRAMES].mean(dim=-1), mask)
        loss_pred = err[:, :, NUM_INPUT_FRAMES].mean()  # frame 4 is never seen: every patch counts
        return {"loss_static": loss_static, "loss_recon": loss_recon, "loss_pred": loss_pred,
                "loss_dynamic": loss_recon + loss_pred}

    def per_clip_losses(self, target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The losses of `forward_loss`, per clip. target, pred [B, L, 4, V]; mask [B, L] -> each [B]."""
        err = self.patch_errors(target, pred)  # [B, L, 4]
        masked = (err[:, :, :NUM_INPUT_FRAMES] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # [B, 3]
        loss_recon = masked.mean(-1)
        loss_pred = err[:, :, NUM_INPUT_FRAMES].mean(1)
        return {"loss_static": masked[:, 0], "loss_recon": loss_recon, "loss_pred": loss_pred,
                "loss_dynamic": loss_recon + loss_pred, "frame_errors": torch.cat([masked, loss_pred[:, None]], 1)}

    @staticmethod
    def objective(losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """The one number every scheme, seed and run is compared on: static + dynamic (recon + pred), whatever the
        training weights. Works on batch means and on per-clip losses alike."""
        return losses["loss_static"] + losses["loss_dynamic"]

    # ----------------------------------------------------------------------------------------------------------
    # the three passes
    def forward_video(self, clips: torch.Tensor, noise: torch.Tensor | None = None, mask_ratio: float | None = None,
                      tokens: torch.Tensor | None = None):
        """Joint / dynamic pass. clips [B, 4, C, H, W] -> losses, pred [B, L, 4, V], mask [B, L], target [B, L, 4, V].
        `tokens`: the clips' `embed_video`, when the caller has it already (the evaluation also encodes them
        unmasked); the target is returned for per-clip errors (evaluation/features.py)."""
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        tokens = self.embed_video(clips) if tokens is None else tokens
        latent, mask, ids_restore = self.forward_encoder(tokens, ratio, noise)
        pred = self.forward_decoder(latent, ids_restore, self.head_video)
        pred = pred.reshape(pred.shape[0], pred.shape[1], NUM_FRAMES, -1)  # [B, L, 4, V]
        target = self.targets(clips)
        return {**self.forward_loss(target, pred, mask), "pred": pred, "mask": mask, "target": target}

    def forward_image(self, clips: torch.Tensor, noise: torch.Tensor | None = None, mask_ratio: float | None = None):
        """Static pass of the alternating mode: the image path on frame 1. -> loss_static, pred [B, L, V], mask."""
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.forward_encoder(self.embed_image(clips[:, 0]), ratio, noise)
        pred = self.forward_decoder(latent, ids_restore, self.head_image)  # [B, L, V]
        target = self.targets(clips[:, :1])[:, :, 0]  # [B, L, V]
        loss = self.masked_mean(self.patch_errors(target, pred), mask)
        return {"loss_static": loss, "pred": pred, "mask": mask}

    # ----------------------------------------------------------------------------------------------------------
    # which parameters a training scheme uses
    def unused_modules(self, paths: tuple[str, ...]) -> list[nn.Module]:
        """Modules that training on `paths` ("video", "image") never reaches: the post-layernorm always (features
        only, `encode`), and each path's own embedding and head when that path is not trained."""
        unused = [self.encoder.post_layernorm]
        if "image" not in paths:
            unused += [self.encoder.embeddings.patch_embedding, self.head_image]
        if "video" not in paths:
            unused += [self.video_patch_embed, self.head_video]
        return unused

    def shared_decoder_weight(self) -> nn.Parameter:
        """The last layer that the static and the dynamic loss both pass through (GradNorm balances there)."""
        return self.decoder_blocks[-1].mlp.fc2.weight

    # ----------------------------------------------------------------------------------------------------------
    # features for downstream use
    def encode(self, clips: torch.Tensor, path: str = "video") -> torch.Tensor:
        """Unmasked encoding -> projected class token after CLIP's post-layernorm, [B, P]."""
        return self.encode_tokens(self.embed_video(clips) if path == "video" else self.embed_image(clips[:, 0]))

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """`encode` from the path's patch tokens [B, L, D] (embed_video or embed_image) -> [B, P]."""
        x = torch.cat([self.encoder.class_token(tokens.shape[0]).to(tokens.dtype), tokens], dim=1)
        x = self.encoder(x)
        return self.projection(self.encoder.post_layernorm(x[:, 0]))
