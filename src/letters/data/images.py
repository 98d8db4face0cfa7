"""Turning an image file of any mode and size into the model's input.

Shared by the data modules and by predict, so that a checkpoint's preprocessing is the same
code that prepared its training data.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from letters.common.errors import LettersError

CLASSES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# An image of more pixels than Pillow's limit (a decompression bomb) is refused, not decoded:
# Pillow only warns below twice its limit, and the warning becomes the error reported below.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def label_index(label: object, where: str) -> int:
    """Class index of a letter, case-insensitive ('g' and 'G' are one class)."""
    if not (isinstance(label, str) and len(label) == 1 and label.upper() in CLASSES):
        raise LettersError(f"{where}: label {label!r} is not a single letter A-Z")
    return CLASSES.index(label.upper())


def to_grey(image: Image.Image) -> Image.Image:
    """Grey 8-bit, whatever the mode: transparency is laid on white, 16-bit is scaled down."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    if image.mode == "P" or image.mode == "PA" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("L")


def load_grey(path: str | os.PathLike, size: int) -> np.ndarray:
    """Read an image file as a grey uint8 array of size x size; one clear error if unreadable."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("L", (size * 2, size * 2))  # decode large JPEGs at a reduced scale
            grey = to_grey(image)
            resized = grey.resize((size, size), Image.Resampling.BILINEAR)
            return np.array(resized, dtype=np.uint8)  # a writable copy
    except FileNotFoundError:
        raise LettersError(f"{path}: image file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise LettersError(f"{path}: refused, too many pixels ({error})") from None
    except UnidentifiedImageError:
        raise LettersError(f"{path}: not an image (or a format Pillow cannot read)") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise LettersError(f"{path}: cannot read image ({error})") from None


def to_model_input(grey: torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W] -> float [..., H*W] in [-1, 1], as the reference: (x/255 - 0.5) * 2."""
    scaled = grey.to(torch.float32).div_(127.5).sub_(1.0)
    return scaled.flatten(-2)


def resize_grey(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a batch of grey uint8 images [N, H, W] with antialiasing (for in-memory sources)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    resized = torch.nn.functional.interpolate(
        images.unsqueeze(1).float(), size=(size, size), mode="bilinear", antialias=True
    )
    return resized.squeeze(1).round_().clamp_(0, 255).to(torch.uint8)
