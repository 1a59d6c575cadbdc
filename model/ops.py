"""The Paella operations as values: one frozen dataclass per operation, and `Draw`, one image to make.

An operation says what to draw on which canvas; `Pipeline.tokens` turns a batch of `Draw`s, of any
operations sharing a canvas and a step count, into token grids. Pictures and masks are immutable
values here, so operations compare and hash by content. Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from model.config import SamplerConfig

InterpolationMode = Literal["lerp", "slerp"]


@dataclass(frozen=True)
class Picture:
    """An RGB picture: `width` x `height` uint8 pixels, row-major RGB bytes."""

    pixels: bytes
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1 or len(self.pixels) != self.width * self.height * 3:
            raise ValueError(f"{len(self.pixels)} bytes are not {self.width}x{self.height} RGB pixels")

    @classmethod
    def from_array(cls, array: np.ndarray) -> Picture:
        """From uint8 pixels [H, W, 3]."""
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"pictures are uint8 [H, W, 3] arrays, got {array.dtype} {array.shape}")
        return cls(np.ascontiguousarray(array).tobytes(), array.shape[1], array.shape[0])

    def array(self) -> np.ndarray:
        """The pixels as a read-only uint8 array [H, W, 3]."""
        return np.frombuffer(self.pixels, dtype=np.uint8).reshape(self.height, self.width, 3)

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass(frozen=True)
class Mask:
    """Which pixels to repaint: `width` x `height` booleans, packed eight to a byte (`np.packbits`)."""

    bits: bytes
    width: int
    height: int

    @classmethod
    def from_array(cls, array: np.ndarray) -> Mask:
        """From a bool array [H, W], True = repaint."""
        if array.ndim != 2:
            raise ValueError(f"masks are bool [H, W] arrays, got shape {array.shape}")
        return cls(np.packbits(array.astype(bool)).tobytes(), array.shape[1], array.shape[0])

    def array(self) -> np.ndarray:
        """The mask as a bool array [H, W]."""
        bits = np.frombuffer(self.bits, dtype=np.uint8)
        return np.unpackbits(bits, count=self.width * self.height).reshape(self.height, self.width) > 0

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass(frozen=True)
class Region:
    """A prompt over part of the canvas, for multi-conditioning."""

    prompt: str
    box: tuple[float, float, float, float] | None = None  # (left, top, right, bottom), fractions; None = all
    weight: float = 1.0  # overlapping regions blend by weight

    def __post_init__(self) -> None:
        if self.box is not None:
            left, top, right, bottom = self.box
            if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
                raise ValueError(
                    "a box is [left, top, right, bottom] within [0, 1], left < right, top < bottom"
                )
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ValueError(f"region weights must be positive, got {self.weight}")


@dataclass(frozen=True)
class Generate:
    """Text to image; a negative prompt replaces guidance's zero embedding."""

    prompt: str
    width: int
    height: int
    negative_prompt: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass(frozen=True)
class Inpaint:
    """Repaint the tokens touching the mask's True pixels; every other token stays as encoded."""

    image: Picture
    mask: Mask
    prompt: str

    def __post_init__(self) -> None:
        if self.mask.size != self.image.size:
            raise ValueError(f"mask {self.mask.size} and image {self.image.size} differ in size")

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


@dataclass(frozen=True)
class Outpaint:
    """Extend the canvas by pixels on each side; the image's own tokens stay in place."""

    image: Picture
    prompt: str
    left: int = 0
    right: int = 0
    up: int = 0
    down: int = 0

    def __post_init__(self) -> None:
        if min(self.left, self.right, self.up, self.down) < 0:
            raise ValueError("outpainting adds a non-negative number of pixels per side")

    @property
    def size(self) -> tuple[int, int]:
        return self.image.width + self.left + self.right, self.image.height + self.up + self.down


@dataclass(frozen=True)
class Variation:
    """A new image from the CLIP image embedding of a picture (any size) in place of a text embedding."""

    image: Picture
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass(frozen=True)
class Interpolation:
    """`frames` images between two prompts or pictures (lerp or slerp of their embeddings); a `Draw`'s
    `index` picks the frame, 0 = `start`, frames - 1 = `end`."""

    start: str | Picture
    end: str | Picture
    frames: int
    width: int
    height: int
    mode: InterpolationMode = "slerp"

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError("an interpolation has at least one frame")
        if self.mode not in ("lerp", "slerp"):
            raise ValueError(f"unknown interpolation mode {self.mode!r}")

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def t(self, index: int) -> float:
        """Where frame `index` lies between start (0) and end (1)."""
        if not 0 <= index < self.frames:
            raise ValueError(f"frame {index} of {self.frames}")
        return index / max(self.frames - 1, 1)


@dataclass(frozen=True)
class Composition:
    """Multi-conditioning: each token position gets the weighted mean embedding of the regions over it."""

    regions: tuple[Region, ...]
    width: int
    height: int

    def __post_init__(self) -> None:
        if not self.regions:
            raise ValueError("a composition has at least one region")

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass(frozen=True)
class StructuralEdit:
    """Re-render a picture under a new prompt keeping its layout: noise its tokens to r_k and run the steps
    from k = round((1 - strength) * steps) with renoise mode `prev` (strength 0: the picture's tokens)."""

    image: Picture
    prompt: str
    strength: float

    def __post_init__(self) -> None:
        if not 0 <= self.strength <= 1:
            raise ValueError(f"strength must lie in [0, 1], got {self.strength}")

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def start_step(self, steps: int) -> int:
        return round((1 - self.strength) * steps)


Operation = Generate | Inpaint | Outpaint | Variation | Interpolation | Composition | StructuralEdit
OPERATIONS: tuple[type[Operation], ...] = (
    Generate,
    Inpaint,
    Outpaint,
    Variation,
    Interpolation,
    Composition,
    StructuralEdit,
)


def spatial(op: Operation) -> bool:
    """Whether the operation conditions on a map of embeddings rather than one pooled embedding."""
    return isinstance(op, Composition)


@dataclass(frozen=True)
class Draw:
    """One image to make: an operation, the seed that alone decides it, the sampler settings, and for an
    interpolation the frame's index."""

    op: Operation
    seed: int
    sampler: SamplerConfig
    index: int = 0
