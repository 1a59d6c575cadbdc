"""Runs one batch of slices on the resident Pipeline: the slices' draws in, pictures per slice out; and
the PNG encoding of a picture, which the worker runs in its encoding pool."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image

from model.pipeline import Pipeline
from service.queue.jobs import Slice


class Executor:
    """One `Pipeline.images` call per batch; every image's seed alone decides its tokens."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def __call__(self, slices: Sequence[Slice]) -> list[list[Image.Image]]:
        """Pictures per slice, in the order of the slice's seeds."""
        pictures = self.pipeline.images([d for s in slices for d in s.draws()])
        out, at = [], 0
        for s in slices:
            out.append(pictures[at : at + s.n])
            at += s.n
        return out


def to_png(image: Image.Image) -> bytes:
    """PNG bytes at zlib level 1: several times faster than the default for a small size cost, and as
    deterministic (equal pictures give equal bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
