"""Jobs between the HTTP side and the GPU side: a request's model, operation, seeds, sampler settings,
previews and encoding."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from model.config import SamplerConfig
from model.ops import Draw, Operation, Variation, spatial

ImageFormat = Literal["png", "jpeg", "webp", "gif"]


@dataclass(frozen=True)
class Encoding:
    """How a job's pictures become bytes: the format and, for JPEG and WebP, the quality (0-100)."""

    format: ImageFormat = "png"
    compression: int = 100

    @property
    def media_type(self) -> str:
        return f"image/{self.format}"


PNG = Encoding()


@dataclass
class Job:
    """One request's work: `len(seeds)` images of one operation by the workers of `model`, answered by
    `deadline`, each image with `previews` pictures of its progress first, all encoded by `encoding`.

    Image i is `Draw(op, seeds[i], sampler, index=i)`. `deadline` and `created` are seconds on the queue's
    clock (`time.time()`, or on Redis its server's clock).
    """

    id: str
    op: Operation
    seeds: list[int]
    sampler: SamplerConfig
    model: str
    deadline: float
    created: float = field(default_factory=time.time)
    previews: int = 0
    encoding: Encoding = PNG
    reply_to: str = ""  # where the queue sends the answer (a Redis API process's reply list)

    @classmethod
    def new(
        cls,
        op: Operation,
        seeds: list[int],
        sampler: SamplerConfig,
        timeout_s: float,
        now: float | None = None,
        *,
        model: str,
        previews: int = 0,
        encoding: Encoding = PNG,
    ) -> Job:
        """A job with a fresh id, created `now` and due `timeout_s` later."""
        created = time.time() if now is None else now
        deadline = created + timeout_s
        return cls(uuid.uuid4().hex, op, list(seeds), sampler, model, deadline, created, previews, encoding)

    @property
    def n(self) -> int:
        return len(self.seeds)

    def key(self, *, variations_apart: bool = True) -> Hashable:
        """Only jobs of equal keys share a batch: what one sampling call must share, the canvas and the
        step count, whether the conditioning is a map (compositions) or one embedding, and the network:
        where the weight folder has an image denoiser, variations run on it and batch apart
        (`variations_apart`); without one they share the text denoiser's batches. Everything else
        (operation, guidance, temperature, typical mass, seeds, masks, starting tokens) is per image."""
        variation = variations_apart and isinstance(self.op, Variation)
        return self.op.size, self.sampler.steps, spatial(self.op), variation


@dataclass(frozen=True)
class Slice:
    """Images `start:stop` of a job, placed in one batch."""

    job: Job
    start: int
    stop: int

    @property
    def n(self) -> int:
        return self.stop - self.start

    @property
    def seeds(self) -> list[int]:
        return self.job.seeds[self.start : self.stop]

    def draws(self) -> list[Draw]:
        job = self.job
        return [Draw(job.op, job.seeds[i], job.sampler, i) for i in range(self.start, self.stop)]


@dataclass
class Made:
    """What a batch made of one slice: its pictures in seed order and, per picture, its previews in step
    order (none unless the job asked for them). Pictures, or already their bytes."""

    pictures: list[Any]
    previews: list[list[Any]]


Executor = Callable[[list[Slice]], list[Made]]
"""Runs one batch on the GPU: what it made of each slice. Synchronous; may raise `ServiceError`."""


@runtime_checkable
class Overlapping(Protocol):
    """An executor in two halves, `execute(slices) == collect(slices, launch(slices))`: `launch` queues a
    batch's work on the device and returns, so the host can prepare the next batch while it runs; `collect`
    waits for that batch alone. Both synchronous, in the GPU thread; either may raise `ServiceError`."""

    def __call__(self, slices: list[Slice]) -> list[Made]: ...

    def launch(self, slices: list[Slice]) -> Any: ...

    def collect(self, slices: list[Slice], launched: Any) -> list[Made]: ...
