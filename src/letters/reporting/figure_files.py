"""Figures as files: the one way every picture letters makes is made, drawn and written, a run's
pictures and a sweep's plot alike (the plot also as SVG, for a report). Kept apart from
``pictures`` so that the report, which needs no torch, does not load it.

Figures are drawn by Agg directly, never through pyplot: files only, never a window (a job may
have no display), no global backend switched for whoever imports letters, and nothing for
pyplot to keep alive until closed."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from letters.common.files import write_atomically


def new_figure(**figure_options: Any) -> Figure:
    """An empty figure on its own Agg canvas; ``figure_options`` go to matplotlib's Figure
    (figsize, dpi)."""
    figure = Figure(**figure_options)
    FigureCanvasAgg(figure)
    return figure


def figure_pixels(figure: Figure) -> np.ndarray:
    """The figure drawn once, as RGB pixels [height, width, 3] (uint8): what its PNG holds and
    what TensorBoard shows, from the same drawing."""
    canvas = figure.canvas
    canvas.draw()
    return np.array(canvas.buffer_rgba())[..., :3]  # opaque white ground: alpha says nothing


def png_bytes(pixels: np.ndarray, compress_level: int = 6) -> bytes:
    """RGB [height, width, 3] or grey [height, width] pixels (uint8) as a PNG file's bytes;
    ``compress_level`` from 1 (fastest) to 9 (smallest), zlib's 6 by default."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def figure_bytes(figure: Figure, image_format: str, **savefig_options: Any) -> bytes:
    """The figure rendered as ``image_format`` (png, svg, pdf) by matplotlib's ``savefig``,
    whose ``savefig_options`` can trim its margins (the report's plot does)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, **savefig_options)
    return buffer.getvalue()


def save_figure(
    figure: Figure, path: str | os.PathLike, vector: str | None = None, **savefig_options: Any
) -> Path:
    """Write the figure to ``path`` as PNG and, given ``vector`` ("svg" or "pdf"), beside it
    with that suffix too; each atomically (a reader never sees half a file)."""
    path = Path(path)
    if vector is not None:
        drawing = figure_bytes(figure, vector, **savefig_options)
        write_atomically(path.with_suffix(f".{vector}"), lambda handle: handle.write(drawing))
    png = figure_bytes(figure, "png", **savefig_options)
    write_atomically(path, lambda handle: handle.write(png))
    return path
