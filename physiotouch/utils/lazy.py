"""Names of a package that load on first use (PEP 562): importing one torch-free module of the package (its settings,
what composing the config needs) then does not import torch and Lightning through the package's `__init__`."""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_names(package: str, home: dict[str, str]) -> Callable[[str], object]:
    """-> the package's module-level `__getattr__`: `home` maps each name to the module (relative to `package`)
    that defines it, imported when the name is first read."""

    def __getattr__(name: str):
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(home[name], package), name)

    return __getattr__
