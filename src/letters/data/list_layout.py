"""The reference's "list" layout: images/ plus train.json, validation.json, test.json.

Reading checks everything before decoding anything, so that a bad label or a missing file is
reported in one line naming it instead of failing midway.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from letters.common.errors import LettersError
from letters.data.cache import Splits, cache_key, cached_splits
from letters.data.images import CLASSES, label_index, load_grey

SPLITS = ("train", "validation", "test")
IMAGES = "images"
NEEDED = "the list layout needs train.json, validation.json, test.json and images/ in data.root"


def check_layout(root: Path) -> None:
    """Refuse, in one line that teaches the layout, a ``data.root`` that is not a list-layout
    folder: cheap (no file is read), so that it is said before anything slow starts. Notices a
    root one level too deep (its images/ folder) or too high (a folder holding the data)."""
    if not root.is_dir():
        raise LettersError(f"{root}: data folder not found")
    if is_layout(root):
        return
    parent = Path(os.path.abspath(root)).parent  # as typed, symbolic links kept
    if Path(os.path.abspath(root)).name == IMAGES and is_layout(parent):
        raise LettersError(
            f"{root}: an images folder, not the data folder ({NEEDED}); "
            f"did you mean data.root={parent}?"
        )
    held = sorted(folder for folder in islice(root.iterdir(), 200) if is_layout(folder))
    if held:
        choices = " or ".join(f"data.root={folder}" for folder in held[:3])
        raise LettersError(f"{root}: not a data folder ({NEEDED}); did you mean {choices}?")
    absent = [name for name, present in layout_parts(root).items() if not present]
    if len(absent) == len(layout_parts(root)):
        raise LettersError(f"{root}: not a data folder ({NEEDED})")
    if IMAGES in absent:
        raise LettersError(f"{root / IMAGES}: images folder not found ({NEEDED})")
    raise LettersError(f"{root / absent[0]}: split file not found ({NEEDED})")


def layout_parts(folder: Path) -> dict[str, bool]:
    """Each part of the list layout, and whether ``folder`` has it (not whether it reads)."""
    parts = {f"{split}.json": (folder / f"{split}.json").is_file() for split in SPLITS}
    parts[IMAGES] = (folder / IMAGES).is_dir()
    return parts


def is_layout(folder: Path) -> bool:
    return all(layout_parts(folder).values())


def read_listing(root: Path, split: str) -> list[tuple[str, int]]:
    """(file name, class index) pairs of one split, validated."""
    path = root / f"{split}.json"
    if not path.is_file():
        raise LettersError(f"{path}: split file not found ({NEEDED})")
    try:
        listing = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LettersError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(listing, dict):
        raise LettersError(f"{path}: expected an object mapping image names to letters")
    if not listing:
        raise LettersError(f"{path}: the {split} split is empty")
    entries = []
    for name, label in listing.items():
        check_image_name(name, path)
        entries.append((name, label_index(label, f"{path}: {name}")))
    return entries


def check_image_name(name: str, listing: Path) -> None:
    """An image name is a path inside images/: a split file must not reach other files."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name.strip() or name.startswith(("/", "\\")) or ".." in parts or ":" in name[:2]:
        raise LettersError(
            f"{listing}: {name!r} is not a file name inside images/ (no absolute paths or '..')"
        )


def decode_split(images_dir: Path, entries: list[tuple[str, int]], size: int):
    """Decode one split into uint8 [N, size, size] and int64 [N], in a few threads."""
    paths = [images_dir / name for name, _ in entries]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(lambda path: load_grey(path, size), paths))
    images = torch.from_numpy(np.stack(arrays))
    labels = torch.tensor([label for _, label in entries], dtype=torch.int64)
    return images, labels


def load_list_layout(
    root: str | os.PathLike, norm_size: int, cache_dir: str | os.PathLike
) -> Splits:
    """All three splits of a list-layout folder, decoded once and then read from the cache."""
    root = Path(root).expanduser()
    check_layout(root)
    images_dir = root / IMAGES
    listings = {split: read_listing(root, split) for split in SPLITS}
    fingerprint = []
    for split, entries in listings.items():
        for name, label in entries:
            try:
                stat = (images_dir / name).stat()
            except OSError:
                raise LettersError(f"{images_dir / name}: image file not found") from None
            fingerprint.append((split, name, label, stat.st_size, stat.st_mtime_ns))
    key = cache_key([str(root.resolve()), norm_size, fingerprint])

    def build() -> Splits:
        return {
            split: decode_split(images_dir, entries, norm_size)
            for split, entries in listings.items()
        }

    return cached_splits(cache_dir, "list", key, build)


def export_list_layout(splits: Splits, out: str | os.PathLike) -> Path:
    """Write splits of grey uint8 images as PNG files in the list layout (for other tools)."""
    out = Path(out)
    images_dir = out / IMAGES
    images_dir.mkdir(parents=True, exist_ok=True)
    number = 0
    for split in SPLITS:
        listing = {}
        images, labels = splits[split]
        for image, label in zip(images, labels.tolist(), strict=True):
            number += 1
            name = f"{number:05d}.png"
            Image.fromarray(image.numpy(), "L").save(images_dir / name)
            listing[name] = CLASSES[label]
        (out / f"{split}.json").write_text(json.dumps(listing, indent=0) + "\n")
    return out
