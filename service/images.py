"""Decoding and checking uploaded images and masks, and PNG encoding of results."""

from __future__ import annotations

import base64
import io
import re
import warnings

import numpy as np
from PIL import Image

from service.errors import ApiError

FORMATS = ("PNG", "JPEG", "WEBP")
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def open_image(data: bytes, *, field: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """Open and fully decode a PNG, JPEG or WebP upload; its size is checked from the header first."""
    if len(data) > max_bytes:
        raise ApiError(413, "image_too_large", f"{field}: {len(data)} bytes, at most {max_bytes}", field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, "image_too_large", f"{field}: too many pixels", field) from None
    except Exception:
        raise ApiError(400, "invalid_image", f"{field}: not a PNG, JPEG or WebP image", field) from None
    width, height = image.size
    if width * height > max_pixels:
        raise ApiError(
            413, "image_too_large", f"{field}: {width}x{height} pixels, at most {max_pixels} in all", field
        )
    try:
        image.load()
    except Exception:
        raise ApiError(
            400, "invalid_image", f"{field}: the image data is corrupt or truncated", field
        ) from None
    return image


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def repaint_mask(image: Image.Image, field: str) -> np.ndarray:
    """OpenAI's convention: fully transparent pixels (alpha 0) are repainted. Bool [H, W]."""
    if not has_alpha(image):
        raise ApiError(
            400, "mask_without_alpha", f"{field}: needs an alpha channel marking what to repaint", field
        )
    alpha = np.asarray(image.convert("RGBA"))[:, :, 3]
    return alpha == 0


def check_side_rules(width: int, height: int, *, multiple: int, max_side: int, field: str) -> None:
    """Sides must be multiples of `multiple`, from twice it (the denoiser's least grid) to `max_side`."""
    least = 2 * multiple
    if (
        width % multiple
        or height % multiple
        or not (least <= width <= max_side and least <= height <= max_side)
    ):
        raise ApiError(
            400,
            "invalid_size",
            f"{field}: {width}x{height}; width and height must be multiples of {multiple}, "
            f"between {least} and {max_side}",
            field,
        )


def parse_size(size: str, *, multiple: int, max_side: int, field: str = "size") -> tuple[int, int]:
    """`"WxH"` to (width, height), checked against the pipeline's size rules."""
    match = _SIZE.match(size)
    if not match:
        raise ApiError(400, "invalid_size", f"{field}: {size!r} is not of the form WIDTHxHEIGHT", field)
    width, height = int(match[1]), int(match[2])
    check_side_rules(width, height, multiple=multiple, max_side=max_side, field=field)
    return width, height


def to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def mask_to_png(mask: np.ndarray) -> bytes:
    """A bool repaint mask as a compact 1-bit PNG (white = repaint)."""
    return to_png(Image.fromarray(mask.astype(np.uint8) * 255).convert("1"))


def rgb_from_b64(value: str) -> Image.Image:
    """An RGB image from the base64 image a payload carries (already checked on the HTTP side)."""
    return Image.open(io.BytesIO(base64.b64decode(value))).convert("RGB")


def mask_from_png_b64(value: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(value))).convert("L")) > 127
