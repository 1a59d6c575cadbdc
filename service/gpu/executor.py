"""Runs one batch of slices on the resident Pipeline: the slices' draws in, pictures (and the previews their
jobs ask for) per slice out; and the encoding of a picture, which the worker runs in its encoding pool."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence

import numpy as np
from PIL import Image

from model.launched import Launched
from model.pipeline import Pipeline
from model.sampler import preview_steps
from service import metrics
from service.gpu.png import encode_png
from service.queue.jobs import PNG, Encoding, Made, Slice


class Executor:
    """One `Pipeline.render` per batch, in two halves the worker can overlap: `launch` (rows built, work
    queued on the device) and `collect` (pictures back, per slice). Every image's seed alone decides its
    tokens, and its previews come from the same sampling pass."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._graph_events = Counter(pipeline.graph_events)  # as last counted into the metrics

    def __call__(self, slices: Sequence[Slice]) -> list[Made]:
        """Pictures per slice, in the order of the slice's seeds, each with its previews."""
        return self.collect(slices, self.launch(slices))

    def launch(self, slices: Sequence[Slice]) -> Launched:
        """Queue the batch's work; returns before the device has done it."""
        draws = [d for s in slices for d in s.draws()]
        previews = [preview_steps(s.job.sampler.steps, s.job.previews) for s in slices for _ in range(s.n)]
        return self.pipeline.launch(draws, previews)

    def running(self, launched: Launched) -> bool:
        """Whether the device is still on a launched batch (CUDA; never on a CPU)."""
        return launched.running()

    def elapsed(self, launched: Launched) -> float | None:
        """The device seconds of a collected batch (CUDA events; None on a CPU): `service.gpu.pace`."""
        return launched.device_seconds()

    def collect(self, slices: Sequence[Slice], launched: Launched) -> list[Made]:
        """A launched batch's pictures per slice, once the device has made them."""
        timings: dict[str, float] = {}
        pictures, previewed = self.pipeline.collect(launched, timings)
        for stage, seconds in timings.items():
            metrics.BATCH_STAGE.labels(stage).observe(seconds)
        self._count_graph_events()
        out, at = [], 0
        for s in slices:
            out.append(Made(pictures[at : at + s.n], previewed[at : at + s.n]))
            at += s.n
        return out

    def _count_graph_events(self) -> None:
        now = self.pipeline.graph_events
        for event, count in (now - self._graph_events).items():
            metrics.GRAPH_EVENTS.labels(event).inc(count)
        self._graph_events = Counter(now)


def encode(image: Image.Image, encoding: Encoding = PNG) -> bytes:
    """A picture's bytes: PNG by `service.gpu.png` (deterministic: equal pictures give equal bytes), JPEG and
    WebP at the encoding's quality, GIF by Pillow."""
    if encoding.format == "png":
        return encode_png(np.asarray(image if image.mode == "RGB" else image.convert("RGB")))
    buffer = io.BytesIO()
    if encoding.format in ("jpeg", "webp"):
        image.save(buffer, format=encoding.format.upper(), quality=encoding.compression)
    else:
        image.save(buffer, format="GIF")
    return buffer.getvalue()
