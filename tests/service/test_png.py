"""The service's PNG encoder: lossless, valid for Pillow (and so for zlib and libpng), deterministic, and
about as small as Pillow's on natural pictures."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from service.gpu.png import PART_BYTES, PARTS, encode_png


def smooth(height: int, width: int) -> np.ndarray:
    """A picture like a model's: gradients and a disc, no noise."""
    y, x = np.mgrid[0:height, 0:width]
    disc = (x - width / 3) ** 2 + (y - height / 2) ** 2 < (min(height, width) / 4) ** 2
    out = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), 128 + 0 * x], -1)
    out[disc] = (230, 40, 30)
    return out.astype(np.uint8)


@pytest.mark.parametrize("shape", [(1, 1), (8, 8), (3, 77), (256, 256), (128, 384), (511, 257)])
def test_a_picture_comes_back_exactly_whatever_its_size(shape: tuple[int, int]) -> None:
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    decoded = Image.open(io.BytesIO(encode_png(pixels)))
    assert decoded.mode == "RGB" and decoded.size == (shape[1], shape[0])
    np.testing.assert_array_equal(np.asarray(decoded), pixels)


def test_a_large_picture_is_one_zlib_stream_of_several_parts() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert 2 * PART_BYTES <= 256 * (1 + 3 * 256)  # this picture takes the parallel path
    data = encode_png(pixels)
    length = int.from_bytes(data[33:37], "big")
    assert data[37:41] == b"IDAT"
    stream = data[41 : 41 + length]
    assert stream.count(b"\x00\x00\xff\xff") >= PARTS - 1  # the parts' sync flushes
    raw = zlib.decompress(stream)  # checks the Adler-32 of the whole
    assert len(raw) == 256 * (1 + 3 * 256)
    assert raw[0] == 0 and raw[1 + 3 * 256] == 2  # the first row unfiltered, the next "Up"


def test_equal_pictures_give_equal_bytes() -> None:
    pixels = smooth(256, 256)
    assert encode_png(pixels) == encode_png(pixels.copy())


def test_natural_pictures_stay_about_as_small_as_pillows() -> None:
    pixels = smooth(256, 256)
    ours = len(encode_png(pixels))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    assert ours <= 1.5 * len(buffer.getvalue()), (ours, len(buffer.getvalue()))
    assert ours < pixels.nbytes / 20  # and it does compress


def test_anything_but_rgb_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), dtype=np.float32))
