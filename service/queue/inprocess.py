"""The in-process queue of `paella serve`: an asyncio queue consumed by the worker in the same process."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from service import metrics
from service.errors import DeadlineExceeded, ServiceError, shutting_down, worker_unavailable
from service.queue.admission import Admission, Throughput, cost
from service.queue.broker import Delivery
from service.queue.jobs import Job, Slice


@dataclass
class _Open:
    job: Job
    future: asyncio.Future[list[bytes]]
    images: list[bytes | None]
    missing: int


class InProcessBroker:
    """An asyncio queue in the API's own process, consumed by an in-process `Worker`.

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
        self._depth = 0
        self._closed = False

    async def submit(self, job: Job) -> list[bytes]:
        if self._closed:
            raise shutting_down()
        self.admission.check(self._cost, cost(job), self.throughput.rate)
        future = asyncio.get_running_loop().create_future()
        self._open[job.id] = _Open(job, future, [None] * job.n, job.n)
        self._cost += cost(job)
        self._set_depth(self._depth + job.n)
        self._queue.append(job)
        self._arrived.set()
        try:
            return await asyncio.wait_for(future, timeout=max(0.0, job.deadline - time.time()))
        except TimeoutError:
            self._finish(job.id, DeadlineExceeded())  # nobody waits any more: never computed
            raise DeadlineExceeded() from None
        except asyncio.CancelledError:  # the client left
            self._finish(job.id, shutting_down())
            raise

    async def depth(self) -> int:
        return self._depth

    async def ping(self) -> bool:
        return not self._closed

    async def live_workers(self) -> int:
        return 0  # the worker of an in-process queue is in this process: its readiness says enough

    async def close(self) -> None:
        """Answer every job still open with 503 `shutting_down`."""
        self._closed = True
        self._queue.clear()
        for job_id in list(self._open):
            self._finish(job_id, shutting_down())

    async def receive(self, max_jobs: int, timeout_s: float) -> list[Delivery]:
        if not self._queue:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=timeout_s)
            except TimeoutError:
                return []
        jobs: list[Delivery] = []
        while self._queue and len(jobs) < max_jobs:
            job = self._queue.popleft()
            if job.id in self._open:
                jobs.append(Delivery(job, 0))
        return jobs

    async def wanted(self, batch: list[Slice]) -> list[Slice]:
        return [part for part in batch if part.job.id in self._open]

    async def complete(self, part: Slice, images: list[bytes]) -> None:
        entry = self._open.get(part.job.id)
        if entry is None:
            return
        for i, png in zip(range(part.start, part.stop), images, strict=True):
            if entry.images[i] is None:
                entry.missing -= 1
            entry.images[i] = png
        if entry.missing == 0:
            self._finish(part.job.id, [png for png in entry.images if png is not None])

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

    def _finish(self, job_id: str, outcome: list[bytes] | ServiceError) -> None:
        entry = self._open.pop(job_id, None)
        if entry is None:
            return
        self._cost = max(0.0, self._cost - cost(entry.job))
        self._set_depth(self._depth - entry.job.n)
        if entry.future.done():
            return
        if isinstance(outcome, ServiceError):
            entry.future.set_exception(outcome)
        else:
            entry.future.set_result(outcome)

    def _set_depth(self, depth: int) -> None:
        self._depth = depth
        metrics.QUEUE_DEPTH.set(depth)
