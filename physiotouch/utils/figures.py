"""The one way physiotouch writes a figure: the Agg backend (no display needed), a tight layout, one resolution,
and the figure closed after saving (reports draw dozens; open figures would pile up in memory)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 100


def save_figure(fig, path: Path, tight: bool = True, size: tuple[float, float] | None = None) -> Path:
    if size is not None:
        fig.set_size_inches(*size)
    if tight:
        fig.tight_layout()
        fig.set_layout_engine(None)  # the layout is done: a layout engine left set would make savefig draw twice
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
