"""A disk cache of decoded splits, so that a second run on the same data decodes nothing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from letters.common.files import write_atomically

# Bump when the decoding changes, so that caches of the old decoding are not reused.
CACHE_FORMAT = 2

Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]


def cache_key(description: object) -> str:
    """A stable hash of everything that determines the decoded tensors."""
    text = json.dumps([CACHE_FORMAT, description], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_splits(cache_dir: str | os.PathLike, kind: str, key: str, build: Callable[[], Splits]):
    """Load the splits stored under ``key``, or build them and store them atomically.

    The file holds grey uint8 images and int64 labels per split. A cache file that cannot be
    read (say, from a killed older version) is rebuilt rather than trusted.
    """
    path = Path(cache_dir).expanduser() / f"{kind}-{key}.pt"
    if path.is_file():
        try:
            stored = torch.load(path, weights_only=True)
            return {name: (images, labels) for name, (images, labels) in stored.items()}
        except Exception:
            pass
    splits = build()
    with contextlib.suppress(OSError):  # a read-only cache folder costs speed, not correctness
        write_atomically(path, lambda handle: torch.save(splits, handle))
    return splits
