"""Decoded batches as 8-bit pixels and as PIL images."""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor


def rgb8(x: Tensor) -> Tensor:
    """A decoded batch (B, 3, H, W) in [0, 1] as 8-bit pixels (B, H, W, 3), where it lies."""
    return (x.float() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def pil_images(x: Tensor) -> list[Image.Image]:
    """PIL RGB images of a decoded batch (B, 3, H, W) in [0, 1]."""
    return [Image.fromarray(a, "RGB") for a in rgb8(x).cpu().numpy()]
