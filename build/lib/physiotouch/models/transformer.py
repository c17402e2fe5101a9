"""Pre-norm transformer block shared by the CLIP encoder and the MAE decoder.

Parameter names follow Hugging Face's CLIP encoder layer (`self_attn.q_proj`, `layer_norm1`, `mlp.fc1`, ...)
so that local CLIP checkpoints load without renaming. The reference's decoder used Hugging Face's ViT layer,
which computes the same function under other names (`attention.attention.query`, `layernorm_before`, ...);
`physiotouch.legacy` renames those keys.

Attention runs through `torch.nn.functional.scaled_dot_product_attention`, so that GPUs pick the flash or
memory-efficient kernels; on the CPU it is the plain softmax(QK^T / sqrt(d)) V.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from physiotouch.cli import ConfigError


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


# Hugging Face `hidden_act` names -> functions (the subset CLIP and ViT checkpoints use).
ACTIVATIONS = {
    "gelu": F.gelu,
    "quick_gelu": quick_gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": F.relu,
    "silu": F.silu,
}


def get_activation(name: str):
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown hidden_act '{name}'; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


_ATTENTION = {"kind": "sdpa"}


@contextmanager
def attention_kernel(kind: str):
    """`with attention_kernel("plain"):` computes attention as softmax(QK^T/sqrt(d))V in plain ops instead of
    `scaled_dot_product_attention` (the benchmark compares the two; the model always trains with "sdpa")."""
    if kind not in ("sdpa", "plain"):
        raise ConfigError(f"attention kernel must be 'sdpa' or 'plain'; got {kind!r}")
    before, _ATTENTION["kind"] = _ATTENTION["kind"], kind
    try:
        yield
    finally:
        _ATTENTION["kind"] = before


def _plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ v


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"hidden size {dim} is not divisible by num_attention_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        # [B, N, D] -> [B, heads, N, head_dim]
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        attend = F.scaled_dot_product_attention if _ATTENTION["kind"] == "sdpa" else _plain_attention
        out = attend(q, k, v)  # [B, heads, N, head_dim]
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        self.act = get_activation(act)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, act: str, eps: float, qkv_bias: bool = True):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(dim, eps=eps)
        self.self_attn = SelfAttention(dim, num_heads, qkv_bias)
        self.layer_norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp_dim, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


def sincos_pos_embed_2d(dim: int, grid_size: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding of MAE, [1 + grid², dim] with a zero row for the class token.

    The first half of the channels encodes a patch's column, the second half its row (MAE builds its grid with
    `np.meshgrid(w, h)`, whose first plane is the column index); each half is [sin(pos·ω), cos(pos·ω)] with
    ω_i = 1 / 10000^(i / (dim/4)). Computed in float64 like MAE's numpy code, then cast.
    """
    if dim % 4:
        raise ConfigError(f"decoder hidden size {dim} must be divisible by 4 for the 2-D sine-cosine embedding")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(torch.arange(grid_size, dtype=torch.float64),
                                torch.arange(grid_size, dtype=torch.float64), indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:  # [grid²] -> [grid², dim/2]
        angles = pos.reshape(-1, 1) * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    emb = torch.cat([encode(cols), encode(rows)], dim=1)  # [grid², dim]
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=torch.float64), emb], dim=0)
    return emb.float()


def init_linear_and_norm(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_patch_conv(weight: torch.Tensor) -> None:
    """Patch embeddings are initialised like a linear layer (MAE: xavier on the flattened kernel)."""
    fan_out = weight.shape[0]
    fan_in = math.prod(weight.shape[1:])
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(weight, -bound, bound)
