"""What "auto" means for a device and a precision, once: CUDA when a GPU is present and the name allows it, with
bf16 mixed precision where the GPU supports it (else fp16 mixed); else the CPU at full precision."""

from __future__ import annotations

import torch

CUDA_NAMES = ("auto", "cuda", "gpu")  # the names (Lightning's accelerator or ours) that may mean a GPU


def uses_cuda(name: str | None) -> bool:
    return name in CUDA_NAMES and torch.cuda.is_available()


def device_name(name: str | None = "auto") -> str:
    """'auto', 'cuda', 'gpu' or 'cpu' -> the torch device to use here: 'cuda' or 'cpu'."""
    return "cuda" if uses_cuda(name) else "cpu"


def auto_precision(name: str | None = "auto") -> str:
    """The precision 'auto' stands for on that device."""
    if not uses_cuda(name):
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
