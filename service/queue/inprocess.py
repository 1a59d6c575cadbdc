"""The in-process queue of `paella serve`: an asyncio queue consumed by the worker in the same process."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from model.config import ModelConfig
from service import metrics
from service.errors import DeadlineExceeded, ServiceError, shutting_down, worker_unavailable
from service.queue.admission import Admission, Throughput, cost
from service.queue.broker import Delivery, Event, Preview, Result, collect
from service.queue.jobs import Job, Slice


@dataclass
class _Open:
    """A job admitted and not yet answered: its events for `events`, and which images are stored."""

    job: Job
    events: asyncio.Queue[Event | ServiceError] = field(default_factory=asyncio.Queue)
    stored: set[int] = field(default_factory=set)


class InProcessBroker:
    """An asyncio queue in the API's own process, consumed by an in-process `Worker`.

    A job nobody waits for any more (its deadline passed, or its client left and the answer's iteration
    was closed) is forgotten at once: the worker never gets it, or drops it before computing (`wanted`).

    Args:
        admission: decides, from the cost admitted and not yet answered and the worker's measured rate,
            whether a job gets in (`QueueFull` or 413 otherwise).
    """

    heartbeat_interval_s: float | None = None

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.throughput = Throughput()
        self._cost = 0.0
        self._queue: deque[Job] = deque()
        self._arrived = asyncio.Event()
        self._open: dict[str, _Open] = {}
        self._models: dict[str, ModelConfig] = {}
        self._depth = 0
        self._closed = False

    async def enqueue(self, job: Job) -> AsyncIterator[Event]:
        if self._closed:
            raise shutting_down()
        self.admission.check(self._cost, cost(job), self.throughput.rate)
        entry = self._open[job.id] = _Open(job)
        self._cost += cost(job)
        self._set_depth(self._depth + job.n)
        self._queue.append(job)
        self._arrived.set()
        return self._answer(entry)

    async def _answer(self, entry: _Open) -> AsyncIterator[Event]:
        job, missing = entry.job, entry.job.n
        try:
            while missing:
                try:
                    event = await asyncio.wait_for(
                        entry.events.get(), timeout=max(0.0, job.deadline - time.time())
                    )
                except TimeoutError:
                    raise DeadlineExceeded() from None
                if isinstance(event, ServiceError):
                    raise event
                missing -= isinstance(event, Result)
                yield event
        finally:  # answered, failed, past its deadline or its client gone: forget it (a no-op if answered)
            self._finish(job.id, None)

    async def submit(self, job: Job) -> list[bytes]:
        return await collect(self, job)

    async def models(self) -> list[ModelConfig]:
        return sorted(self._models.values(), key=lambda m: m.name)

    async def depth(self) -> int:
        return self._depth

    async def ping(self) -> bool:
        return not self._closed

    async def close(self) -> None:
        """Answer every job still open with 503 `shutting_down`."""
        self._closed = True
        self._queue.clear()
        for job_id in list(self._open):
            self._finish(job_id, shutting_down())

    async def announce(self, model: ModelConfig) -> None:
        self._models[model.name] = model

    async def receive(self, max_images: int, timeout_s: float) -> list[Delivery]:
        if not self._queue:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=timeout_s)
            except TimeoutError:
                return []
        jobs: list[Delivery] = []
        images = 0
        while self._queue and (not jobs or images + self._queue[0].n <= max_images):
            job = self._queue.popleft()
            if job.id in self._open:
                jobs.append(Delivery(job, 0))
                images += job.n
        return jobs

    def clock(self) -> float:
        return time.time()

    async def wanted(self, batch: list[Slice]) -> list[Slice]:
        return [part for part in batch if part.job.id in self._open]

    async def preview(self, part: Slice, previews: list[list[bytes]]) -> None:
        entry = self._open.get(part.job.id)
        if entry is None:
            return
        for i, pictures in zip(range(part.start, part.stop), previews, strict=True):
            if i not in entry.stored:
                for number, data in enumerate(pictures):
                    entry.events.put_nowait(Preview(i, number, data))

    async def complete(self, part: Slice, images: list[bytes]) -> None:
        entry = self._open.get(part.job.id)
        if entry is None:
            return
        for i, data in zip(range(part.start, part.stop), images, strict=True):
            if i not in entry.stored:  # a repeat is harmless
                entry.stored.add(i)
                entry.events.put_nowait(Result(i, data))
        if len(entry.stored) == part.job.n:
            self._finish(part.job.id, None)

    async def fail(self, job: Job, error: ServiceError) -> None:
        self._finish(job.id, error)

    async def release(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._finish(job.id, shutting_down())

    async def abandon(self, jobs: list[Job]) -> None:
        for job in jobs:  # the one worker of this process is gone: answer now rather than at the deadline
            self._finish(job.id, worker_unavailable())

    async def heartbeat(self) -> None:
        return None

    async def record(self, units: float, seconds: float) -> None:
        self.throughput.record(units, seconds)

    def _finish(self, job_id: str, error: ServiceError | None) -> None:
        """Forget a job and take it off the depth and the cost; `error` goes to whoever waits."""
        entry = self._open.pop(job_id, None)
        if entry is None:
            return
        self._cost = max(0.0, self._cost - cost(entry.job))
        self._set_depth(self._depth - entry.job.n)
        if error is not None:
            entry.events.put_nowait(error)

    def _set_depth(self, depth: int) -> None:
        self._depth = depth
        metrics.QUEUE_DEPTH.set(depth)
