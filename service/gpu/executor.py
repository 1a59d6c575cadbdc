"""Runs one batch of slices on the resident Pipeline: the slices' draws in, PNG bytes per slice out."""

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

    def __call__(self, slices: Sequence[Slice]) -> list[list[bytes]]:
        """PNG bytes per slice, in the order of the slice's seeds."""
        pngs = [to_png(image) for image in self.pipeline.images([d for s in slices for d in s.draws()])]
        out, at = [], 0
        for s in slices:
            out.append(pngs[at : at + s.n])
            at += s.n
        return out


def to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
