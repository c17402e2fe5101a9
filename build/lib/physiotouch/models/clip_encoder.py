"""A CLIP vision transformer with Hugging Face's parameter names, written out so that attention runs through SDPA.

Why not `transformers.CLIPVisionModel`: the MAE feeds it already-embedded, masked token sequences (video tubes or
image patches, a subset of positions), which the Hugging Face module does not accept, and transformers 5 removed
the inner `CLIPVisionTransformer` the reference called into. Keeping the names identical
(`embeddings.patch_embedding`, `pre_layrnorm`, `encoder.layers.N.self_attn.q_proj`, `post_layernorm`) means a
CLIP checkpoint's `vision_model.*` weights load as they are.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import EncoderConfig
from .transformer import TransformerBlock


class ClipEmbeddings(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.randn(cfg.hidden_size) * 0.02)
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, cfg.patch_size, bias=False)
        # Row 0 belongs to the class token, rows 1.. to the patches in row-major order.
        self.position_embedding = nn.Embedding(cfg.num_patches + 1, cfg.hidden_size)
        nn.init.normal_(self.position_embedding.weight, std=0.02)


class ClipLayers(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerBlock(cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size, cfg.hidden_act,
                             cfg.layer_norm_eps)
            for _ in range(cfg.num_hidden_layers)
        )

        self.gradient_checkpointing = cfg.gradient_checkpointing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            x = checkpoint(layer, x, use_reentrant=False) if recompute else layer(x)
        return x


class ClipVisionEncoder(nn.Module):
    """embeddings -> pre_layrnorm -> encoder.layers -> (post_layernorm for pooled features)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = ClipEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)  # sic: Hugging Face's spelling
        self.encoder = ClipLayers(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def patch_pos_embed(self) -> torch.Tensor:
        return self.embeddings.position_embedding.weight[1:]  # [L, D]

    def class_token(self, batch: int) -> torch.Tensor:
        cls = self.embeddings.class_embedding + self.embeddings.position_embedding.weight[0]
        return cls.expand(batch, 1, -1)  # [B, 1, D]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, 1 + K, D] (class token first, positions already added) -> last hidden state [B, 1 + K, D]."""
        return self.encoder(self.pre_layrnorm(tokens))
