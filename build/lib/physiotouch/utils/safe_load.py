"""Every checkpoint the package reads goes through here: `torch.load(weights_only=True)` or safetensors.

`weights_only=True` lets torch rebuild tensors, containers and primitive values only, and refuses any other
class the pickle names before it is constructed, so a crafted file cannot run code. The reference program saved
an `argparse.Namespace` of its command-line arguments inside every checkpoint; that one harmless type is allowed
explicitly (`allow_namespace=True`) where reference files are read, and nothing else.
"""

from __future__ import annotations

import argparse
import pickle
import zipfile
from pathlib import Path

import torch

from physiotouch.cli import UserError


class CheckpointError(UserError):
    """A checkpoint file that cannot be used: missing, corrupt, unsafe or of the wrong kind."""


def _check_tensors(obj, path: Path, depth: int = 0) -> None:
    """Every tensor must be backed by as many bytes as it claims: a crafted file can give a 1-byte storage a shape
    of 16384x16384 with zero strides, which costs nothing to load and gigabytes once anything copies it."""
    if depth > 50:
        raise CheckpointError(f"refused to load '{path}': it nests containers more than 50 deep")
    if isinstance(obj, torch.Tensor):
        needed = obj.numel() * obj.element_size()
        if obj.numel() and needed > obj.untyped_storage().nbytes():
            raise CheckpointError(f"refused to load '{path}': a tensor of shape {tuple(obj.shape)} claims {needed} "
                                  f"bytes but the file holds {obj.untyped_storage().nbytes()} for it (a crafted "
                                  f"file)")
    elif isinstance(obj, dict):
        for value in obj.values():
            _check_tensors(value, path, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _check_tensors(value, path, depth + 1)


def safe_torch_load(path: str | Path, allow_namespace: bool = False, map_location="cpu", mmap: bool = False):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist (or is not a file)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint '{path}' is empty (0 bytes): it was probably cut off while saving")
    extra = [argparse.Namespace] if allow_namespace else []
    try:
        with torch.serialization.safe_globals(extra):
            obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refused to load '{path}': it holds Python objects other than tensors and plain values, which could "
            f"run code when unpickled. Only checkpoints written by physiotouch or by the reference program are "
            f"accepted. (torch said: {str(err).splitlines()[-1][:300]})") from None
    except (zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt or truncated and cannot be read ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}). Use another checkpoint (e.g. the previous periodic one).") from None
    _check_tensors(obj, path)
    return obj


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"safetensors file '{path}' is corrupt or unreadable: {err}") from None
