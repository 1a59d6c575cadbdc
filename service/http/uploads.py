"""Uploaded pictures and masks, decoded and checked, and canvas sizes checked against the model's rules."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image

from model.config import ModelConfig
from model.ops import Mask, Picture
from service.errors import ServiceError

FORMATS = ("PNG", "JPEG", "WEBP")
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


def open_image(data: bytes, *, field: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """Open and fully decode a PNG, JPEG or WebP upload; its size is checked from the header first."""
    if len(data) > max_bytes:
        raise ServiceError(413, "image_too_large", f"{field}: {len(data)} bytes, at most {max_bytes}", field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ServiceError(413, "image_too_large", f"{field}: too many pixels", field) from None
    except Exception:
        raise ServiceError(400, "invalid_image", f"{field}: not a PNG, JPEG or WebP image", field) from None
    width, height = image.size
    if width * height > max_pixels:
        raise ServiceError(
            413, "image_too_large", f"{field}: {width}x{height} pixels, at most {max_pixels} in all", field
        )
    try:
        image.load()
    except Exception:
        raise ServiceError(
            400, "invalid_image", f"{field}: the image data is corrupt or truncated", field
        ) from None
    return image


def picture(image: Image.Image) -> Picture:
    """The RGB pixels of a decoded upload."""
    return Picture.from_array(np.asarray(image.convert("RGB")))


def repaint_mask(image: Image.Image, field: str) -> Mask:
    """OpenAI's convention: fully transparent pixels (alpha 0) are repainted."""
    if not (image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)):
        raise ServiceError(
            400, "mask_without_alpha", f"{field}: needs an alpha channel marking what to repaint", field
        )
    return Mask.from_array(np.asarray(image.convert("RGBA"))[:, :, 3] == 0)


def check_canvas(model: ModelConfig, width: int, height: int, *, max_side: int, field: str) -> None:
    """A canvas must follow the model's size rules and stay within the service's largest side."""
    try:
        model.grid(width, height)
        if max(width, height) > max_side:
            raise ValueError
    except ValueError:
        raise ServiceError(
            400,
            "invalid_size",
            f"{field}: {width}x{height}; width and height must be multiples of {model.size_multiple}, "
            f"between {model.min_side} and {max_side}",
            field,
        ) from None


def parse_size(size: str, model: ModelConfig, *, max_side: int, field: str = "size") -> tuple[int, int]:
    """`"WxH"` to (width, height), checked against the model's size rules."""
    match = _SIZE.match(size)
    if not match:
        raise ServiceError(400, "invalid_size", f"{field}: {size!r} is not of the form WIDTHxHEIGHT", field)
    width, height = int(match[1]), int(match[2])
    check_canvas(model, width, height, max_side=max_side, field=field)
    return width, height
