"""Download-free synthetic data set of photographed-looking English letters.

Why: training must not depend on a network download, so letters are rendered from the
TrueType fonts that ship with matplotlib and degraded like crops of street photos
(affine and perspective distortion, textured backgrounds, both polarities, blur, noise,
JPEG softness). Every sample draws its randomness from (seed, sample index) only, so the
output is bit-identical whatever the number of worker processes.
"""

from __future__ import annotations

import io
import itertools
import multiprocessing
import os
import string
import sys
from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# Bump when the rendering changes: it is part of the cache key of rendered data sets.
VERSION = 1
_NUM_CLASSES = 26
_WORK_SCALE = 3  # render at 3x the output size, downsample with antialiasing at the end
_CHECK_FONT_SIZE = 32
_MISSING_CODE_POINT = "\ue000"  # unassigned: fonts draw their missing-glyph box (or nothing)
# Display fonts hold no letters, LastResort draws one placeholder box for every letter,
# the cm symbol fonts map ASCII letters to math symbols, STIX NonUni/Siz to nothing usable.
_EXCLUDED_FONT_PREFIXES = (
    "DejaVuSansDisplay",
    "DejaVuSerifDisplay",
    "LastResort",
    "cmex",
    "cmmi",
    "cmsy",
    "STIXNonUni",
    "STIXSiz",
)
_IN_PROCESS_LIMIT = 500  # below this many samples, starting workers costs more than it saves
_MAX_WORKERS = 4

FontTable = dict[str, tuple[str, ...]]  # character -> paths of the fonts that can draw it


@cache
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    """Load each font once per process: parsing a TrueType file is the slowest step."""
    return ImageFont.truetype(path, size)


def _draw_glyph(font: ImageFont.FreeTypeFont, char: str, stroke: int = 0) -> Image.Image | None:
    """Render one character tightly cropped to its ink, white on black; None if it has no ink."""
    left, top, right, bottom = font.getbbox(char, stroke_width=stroke)
    if right <= left or bottom <= top:
        return None
    image = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(image).text((1 - left, 1 - top), char, font=font, fill=255, stroke_width=stroke)
    ink = image.getbbox()
    return image.crop(ink) if ink else None


def _usable_fonts() -> FontTable:
    """Map each letter to the fonts that really draw it: not empty, not the missing-glyph box,
    and not the same picture as a letter of another class (as in placeholder fonts)."""
    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    table: dict[str, list[str]] = {char: [] for char in string.ascii_letters}
    for path in sorted(font_dir.glob("*.ttf")):
        if path.name.startswith(_EXCLUDED_FONT_PREFIXES):
            continue
        font = _font(str(path), _CHECK_FONT_SIZE)
        missing = _draw_glyph(font, _MISSING_CODE_POINT)
        pictures = {}
        for char in string.ascii_letters:
            glyph = _draw_glyph(font, char)
            if glyph is not None:
                pictures[char] = (glyph.size, glyph.tobytes())
        missing_picture = None if missing is None else (missing.size, missing.tobytes())
        for char, picture in pictures.items():
            clashes = any(
                other.lower() != char.lower() and pictures[other] == picture for other in pictures
            )
            if picture != missing_picture and not clashes:
                table[char].append(str(path))
    return {char: tuple(paths) for char, paths in table.items()}


def _place(
    glyph: Image.Image,
    size: int,
    height: float,
    center: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Warp a glyph onto a size x size canvas with one projective transform (scale, shear,
    rotation, mild perspective) so it is resampled only once; returns coverage in [0, 1]."""
    width_px, height_px = glyph.size
    aspect = rng.uniform(0.85, 1.15)
    scale = min(height / height_px, 0.8 * size / (aspect * width_px))
    angle = np.deg2rad(rng.uniform(-12.0, 12.0))
    shear = rng.uniform(-0.2, 0.2)
    tilt_x, tilt_y = rng.uniform(-0.25, 0.25, size=2) / size
    to_origin = np.array([[1, 0, -width_px / 2], [0, 1, -height_px / 2], [0, 0, 1]])
    stretch = np.diag([scale * aspect, scale, 1.0])
    slant = np.array([[1, shear, 0], [0, 1, 0], [0, 0, 1]])
    cos, sin = np.cos(angle), np.sin(angle)
    rotate = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
    perspective = np.array([[1, 0, 0], [0, 1, 0], [tilt_x, tilt_y, 1]])
    to_center = np.array([[1, 0, center[0]], [0, 1, center[1]], [0, 0, 1]])
    forward = to_center @ perspective @ rotate @ slant @ stretch @ to_origin
    inverse = np.linalg.inv(forward)
    coefficients = tuple((inverse / inverse[2, 2]).flatten()[:8])
    warped = glyph.transform(
        (size, size), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BILINEAR
    )
    return np.asarray(warped, dtype=np.float32) / 255.0


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-frequency blobs in [-0.5, 0.5]: stains, uneven paint and lighting of real signs."""
    cells = int(rng.integers(2, 7))
    coarse = Image.fromarray(rng.random((cells, cells), dtype=np.float32), mode="F")
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC)) - 0.5


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear ramp in [-0.7, 0.7] along a random direction: shading across the crop."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    axis = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    return np.cos(angle) * axis[None, :] + np.sin(angle) * axis[:, None]


def _border_edge(rng: np.random.Generator, size: int) -> np.ndarray:
    """Coverage of a straight edge (sign border, pole) reaching in from one side of the crop."""
    axis = np.arange(size, dtype=np.float32)
    along, across = np.meshgrid(axis, axis)
    if rng.random() < 0.5:
        along, across = across, along
    if rng.random() < 0.5:
        across = size - 1 - across
    depth = rng.uniform(0.03, 0.15) * size + rng.uniform(-0.1, 0.1) * (along - size / 2)
    return np.clip(depth - across + 0.5, 0.0, 1.0)


def _render_sample(
    seed: int, index: int, label: int, image_size: int, fonts: FontTable
) -> np.ndarray:
    """Render one letter crop; all randomness comes from (seed, index) for reproducibility."""
    rng = np.random.default_rng([seed, 1, index])
    size = image_size * _WORK_SCALE
    char = chr(ord("A") + label)
    char = char if rng.random() < 0.5 else char.lower()
    path = fonts[char][rng.integers(len(fonts[char]))]
    font = _font(path, size)
    stroke = int(rng.integers(1, 4)) if rng.random() < 0.2 else 0  # bolder paint
    shift = rng.uniform(-0.06, 0.06, size=2) * size
    center = (size / 2 + shift[0], size / 2 + shift[1])
    glyph = _draw_glyph(font, char, stroke)
    assert glyph is not None, "the font table only lists fonts that draw this letter"
    coverage = _place(glyph, size, rng.uniform(0.55, 0.9) * size, center, rng)

    if rng.random() < 0.3:  # part of the neighbouring letter on the same sign
        same_font = [other for other in string.ascii_letters if path in fonts[other]]
        glyph = _draw_glyph(font, same_font[rng.integers(len(same_font))], stroke)
        assert glyph is not None
        neighbour_height = rng.uniform(0.55, 0.9) * size
        half_width = 0.5 * min(neighbour_height * glyph.width / glyph.height, 0.8 * size)
        reach = rng.uniform(0.04, 0.18) * size  # how far it intrudes into the crop
        side = 1.0 if rng.random() < 0.5 else -1.0
        neighbour_center = (size / 2 + side * (size / 2 - reach + half_width), center[1])
        placed = _place(glyph, size, neighbour_height, neighbour_center, rng)
        coverage = np.maximum(coverage, placed)

    contrast = rng.uniform(0.25, 1.0)
    dark = rng.uniform(0.0, 1.0 - contrast)
    light = dark + contrast
    inverted = rng.random() < 0.5  # light letter on a dark background
    foreground, background = (light, dark) if inverted else (dark, light)
    background_field = (
        background
        + rng.uniform(0.0, 0.4) * contrast * _smooth_noise(rng, size)
        + rng.uniform(0.0, 0.3) * contrast * _gradient(rng, size)
    )
    foreground_field = foreground + rng.uniform(0.0, 0.2) * contrast * _smooth_noise(rng, size)
    image = background_field + (foreground_field - background_field) * coverage
    if rng.random() < 0.2:
        edge = _border_edge(rng, size)
        image = image + (rng.uniform(0.0, 1.0) - image) * edge
    image = image * (1.0 + rng.uniform(-0.3, 0.3) * _gradient(rng, size))  # uneven lighting

    picture = Image.fromarray(np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8))
    blur_radius = rng.uniform(0.0, 1.5) * _WORK_SCALE
    picture = picture.filter(ImageFilter.GaussianBlur(blur_radius))
    picture = picture.resize((image_size, image_size), Image.Resampling.LANCZOS)
    pixels = np.asarray(picture, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, rng.uniform(1.0, 10.0), size=pixels.shape)
    picture = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
    if rng.random() < 0.3:  # compression softness, encoded in memory only
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=int(rng.integers(20, 70)))
        picture = Image.open(buffer)
    return np.asarray(picture, dtype=np.uint8)


def _render_chunk(
    seed: int, start: int, labels: np.ndarray, image_size: int, fonts: FontTable
) -> np.ndarray:
    """Render consecutive samples start, start + 1, ... (the unit of work of one process)."""
    images = [
        _render_sample(seed, start + offset, int(label), image_size, fonts)
        for offset, label in enumerate(labels)
    ]
    return np.stack(images) if images else np.zeros((0, image_size, image_size), np.uint8)


def render_letters(
    count_per_class: int, image_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render a balanced, reproducible set of letter crops for 26 case-insensitive classes.

    Why: gives the classifier realistic-looking training data with no download; the caller
    caches the result. Returns (images uint8 [N, image_size, image_size], labels int64 [N]
    in 0..25), N = 26 * count_per_class, in shuffled order; identical for identical args.
    """
    if count_per_class < 0 or image_size < 1 or seed < 0:
        raise ValueError("count_per_class and seed must be >= 0, image_size >= 1")
    fonts = _usable_fonts()
    order = np.random.default_rng([seed, 0])
    labels = order.permutation(np.repeat(np.arange(_NUM_CLASSES, dtype=np.int64), count_per_class))
    total = len(labels)
    workers = min(_MAX_WORKERS, os.cpu_count() or 1)
    in_daemon = multiprocessing.current_process().daemon  # daemons may not start children
    if total < _IN_PROCESS_LIMIT or workers < 2 or in_daemon:
        images = _render_chunk(seed, 0, labels, image_size, fonts)
    else:
        bounds = np.linspace(0, total, 4 * workers + 1).astype(int)
        jobs = [
            (seed, int(start), labels[start:stop], image_size, fonts)
            for start, stop in itertools.pairwise(bounds)
        ]
        # fork starts workers without re-importing torch; other platforms use their default
        method = "fork" if sys.platform.startswith("linux") else None
        with multiprocessing.get_context(method).Pool(workers) as pool:
            images = np.concatenate(pool.starmap(_render_chunk, jobs))
    return torch.from_numpy(images), torch.from_numpy(labels)
