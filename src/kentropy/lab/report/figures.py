"""Figures of the lab report, made on matplotlib `Figure` objects (no pyplot, so no global backend is set)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from kentropy.io import write_atomic


def subplots(nrows: int = 1, ncols: int = 1, **kw):
    """(figure, axes) as `pyplot.subplots` returns them; `figsize` and the like go to the Figure."""
    squeeze = kw.pop("squeeze", True)
    fig = Figure(**kw)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def cmap(name: str):
    return matplotlib.colormaps[name]


def save(fig: Figure, path: Path, dpi: int = 110) -> str:
    """Write the figure as PNG (atomically); returns its path relative to the lab directory."""
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    return f"figures/{Path(path).name}"
