"""Augmentation of whole batches on the model's device: every image its own small affine
warp, contrast, brightness, polarity and noise, in a handful of batched tensor operations.

Letters are photographed dark on light and light on dark, slightly rotated, sheared and
off-centre; the training set is small. No horizontal flips: they change letters.
Randomness comes from a generator the caller seeds per epoch, so a resumed run sees the same
augmented batches as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PhotoAugment:
    """Ranges are symmetric: rotation of +-``rotation`` degrees, scale 1 +- ``scale``, etc."""

    rotation: float = 10.0
    scale: float = 0.12
    shear: float = 0.15
    translate: float = 0.10
    contrast: float = 0.4
    brightness: float = 0.3
    invert: float = 0.5
    noise: float = 0.05

    def __call__(self, inputs: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
        """inputs [n, size*size] in [-1, 1] -> augmented inputs of the same shape."""
        count, device = inputs.shape[0], inputs.device

        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            values = torch.rand(count, *shape, generator=generator, device=generator.device)
            return (low + (high - low) * values).to(device)

        angle = uniform(-1, 1) * math.radians(self.rotation)
        zoom = 1 + uniform(-self.scale, self.scale)
        shear = uniform(-self.shear, self.shear)
        shift = uniform(-self.translate, self.translate, 2)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [
                torch.stack([cos, shear - sin, shift[:, 0]], 1),
                torch.stack([sin, cos, shift[:, 1]], 1),
            ],
            dim=1,
        )
        images = inputs.view(count, 1, size, size)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        warped = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
        warped = warped.view(count, -1)
        gain = 1 + uniform(-self.contrast, self.contrast, 1)
        offset = uniform(-self.brightness, self.brightness, 1)
        sign = torch.where(uniform(0, 1, 1) < self.invert, -1.0, 1.0)
        noise = torch.randn(warped.shape, generator=generator, device=generator.device)
        return (warped * gain + offset) * sign + self.noise * noise.to(device)


def shifted_views(inputs: torch.Tensor, size: int, pixels: int) -> torch.Tensor:
    """Each image moved by every whole-pixel offset of at most ``pixels`` along each axis,
    edges repeated: [n, size*size] -> [(2*pixels + 1)**2 * n, size*size], view by view.

    What test-time shifts classify: an MLP has no built-in tolerance to a letter sitting a
    pixel off where the training images put it, so averaging over small shifts gives it some.
    """
    count = inputs.shape[0]
    images = inputs.view(count, 1, size, size)
    padded = F.pad(images, (pixels,) * 4, mode="replicate")
    offsets = range(2 * pixels + 1)
    views = [padded[:, :, dy : dy + size, dx : dx + size] for dy in offsets for dx in offsets]
    return torch.cat(views).reshape(len(views) * count, size * size)
