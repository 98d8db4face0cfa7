"""Checkpoints: written atomically, and read back with one clear line for anything foreign."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from letters.errors import LettersError
from letters.files import write_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temporary file and a rename, so that a run
    killed while saving never leaves a truncated best.ckpt or last.ckpt behind."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        write_atomically(path, lambda handle: torch.save(checkpoint, handle))


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """A letters checkpoint's contents, or one clear line for a missing, damaged or foreign one.

    weights_only: a checkpoint is data, and loading one must not run code from it.
    """
    path = Path(path)
    if not path.is_file():
        raise LettersError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # truncated, corrupt or not a torch file at all
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LettersError(f"{path}: not a readable checkpoint ({reason[:200]})") from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= set(
        checkpoint
    ):
        raise LettersError(f"{path}: not a letters checkpoint (no state_dict/hyper_parameters)")
    return checkpoint


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild a LetterClassifier from a letters checkpoint alone (weights and preprocessing)."""
    from letters.module import LetterClassifier

    path = Path(path)
    checkpoint = read_checkpoint(path, device)
    try:
        model = LetterClassifier(**checkpoint["hyper_parameters"])
        model.load_state_dict(checkpoint["state_dict"])
        model.on_load_checkpoint(checkpoint)
    except (TypeError, ValueError, RuntimeError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0][:200]
        raise LettersError(f"{path}: not a letters checkpoint ({first_line})") from None
    return model.to(device).eval()
