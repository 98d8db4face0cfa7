"""Figures as files: the one way every picture letters makes is rendered and written, a run's
pictures and a sweep's plot alike (the plot also as SVG, for a report). Kept apart from
``pictures`` so that the report, which needs no torch, does not load it."""

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


def figure_bytes(figure: Figure, image_format: str, **savefig_options: Any) -> bytes:
    """The figure rendered as ``image_format`` (png, svg, pdf); the figure stays open.
    ``savefig_options`` go to matplotlib's ``savefig`` (the report's plot trims its margins)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, **savefig_options)
    return buffer.getvalue()


def figure_png(figure: Figure, **savefig_options: Any) -> bytes:
    """The figure as PNG bytes, rendered once; the figure is closed."""
    png = figure_bytes(figure, "png", **savefig_options)
    plt.close(figure)
    return png


def save_figure(
    figure: Figure, path: str | os.PathLike, vector: str | None = None, **savefig_options: Any
) -> Path:
    """Write the figure to ``path`` as PNG and, given ``vector`` ("svg" or "pdf"), beside it
    with that suffix too; each atomically (a reader never sees half a file). The figure is
    closed."""
    path = Path(path)
    if vector is not None:
        drawing = figure_bytes(figure, vector, **savefig_options)
        write_atomically(path.with_suffix(f".{vector}"), lambda handle: handle.write(drawing))
    png = figure_png(figure, **savefig_options)
    write_atomically(path, lambda handle: handle.write(png))
    return path
