"""Jobs between the HTTP side and the GPU side: a request's operation, seeds and sampler settings."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from model.config import SamplerConfig
from model.ops import Draw, Operation, Variation, spatial


@dataclass
class Job:
    """One request's work: `len(seeds)` images of one operation, answered by `deadline`.

    Image i is `Draw(op, seeds[i], sampler, index=i)`. `deadline` and `created` are `time.time()` seconds.
    """

    id: str
    op: Operation
    seeds: list[int]
    sampler: SamplerConfig
    deadline: float
    created: float = field(default_factory=time.time)

    @classmethod
    def new(
        cls,
        op: Operation,
        seeds: list[int],
        sampler: SamplerConfig,
        timeout_s: float,
        now: float | None = None,
    ) -> Job:
        """A job with a fresh id, created `now` and due `timeout_s` later."""
        created = time.time() if now is None else now
        return cls(uuid.uuid4().hex, op, list(seeds), sampler, created + timeout_s, created)

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def key(self) -> Hashable:
        """Only jobs of equal keys share a batch: what one sampling call must share, the canvas and the
        step count, whether the conditioning is a map (compositions) or one embedding, and the network:
        variations run on the image denoiser where the weight folder has one, so they batch apart. Everything
        else (operation, guidance, temperature, typical mass, seeds, masks, starting tokens) is per image."""
        return self.op.size, self.sampler.steps, spatial(self.op), isinstance(self.op, Variation)


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


Executor = Callable[[list[Slice]], list[list[Any]]]
"""Runs one batch on the GPU: pictures (or their bytes) per slice, in seed order. Synchronous; may raise
`ServiceError`."""
