"""Figures as PNG files: the one way every picture letters makes is rendered and written, a
run's pictures and a sweep's plot alike. Kept apart from ``pictures`` so that the report, which
needs no torch, does not load it."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window: a job may have no display
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from letters.common.files import write_atomically


def figure_png(figure: Figure, **savefig_options: Any) -> bytes:
    """The figure as PNG bytes, rendered once; the figure is closed. ``savefig_options`` go to
    matplotlib's ``savefig`` (the report's plot trims its margins)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **savefig_options)
    plt.close(figure)
    return buffer.getvalue()


def save_figure(figure: Figure, path: str | os.PathLike, **savefig_options: Any) -> Path:
    """Write the figure to ``path`` atomically (a reader never sees half a PNG)."""
    png = figure_png(figure, **savefig_options)
    write_atomically(path, lambda handle: handle.write(png))
    return Path(path)
