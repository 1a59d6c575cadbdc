"""The queue's two interfaces: `Broker` is what the HTTP side uses, `WorkQueue` what the worker uses.

`InProcessBroker` (`service.queue.inprocess`, for `paella serve`) and `RedisBroker`
(`service.queue.redis_broker`, for `paella api` + `paella worker`) implement both. Queue depth, for
admission and `paella_queue_depth`, counts the images of jobs admitted and not yet answered (queued,
batched or being computed).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from service.errors import ServiceError
from service.queue.jobs import Job, Slice


class Broker(Protocol):
    """The API's side of the queue."""

    async def submit(self, job: Job) -> list[bytes]:
        """Enqueue `job` and wait for its PNGs, in seed order.

        Raises `QueueFull` (503, before enqueueing), `DeadlineExceeded` (504) or another `ServiceError`.
        """
        ...

    async def depth(self) -> int:
        """Images admitted and not yet answered."""
        ...

    async def ping(self) -> bool:
        """Whether the queue is reachable."""
        ...

    async def live_workers(self) -> int:
        """Workers that have shown they are alive recently (for a process that runs none itself)."""
        ...

    async def close(self) -> None: ...


class Delivery(NamedTuple):
    """A job handed to a worker; images before `start` were already stored by an earlier delivery."""

    job: Job
    start: int


class WorkQueue(Protocol):
    """The worker's side of the queue."""

    @property
    def heartbeat_interval_s(self) -> float | None:
        """How often the worker must call `heartbeat()` while it holds work; None: never."""
        ...

    async def receive(self, max_jobs: int, timeout_s: float) -> list[Delivery]:
        """Up to `max_jobs` jobs, waiting at most `timeout_s` for the first."""
        ...

    async def wanted(self, batch: list[Slice]) -> list[Slice]:
        """The slices somebody still waits for: what the worker computes (the rest are dropped)."""
        ...

    async def complete(self, part: Slice, images: list[bytes]) -> None:
        """Store a slice's PNGs; the job is acknowledged once all its images are stored."""
        ...

    async def fail(self, job: Job, error: ServiceError) -> None:
        """Answer the job with `error` and acknowledge it."""
        ...

    async def release(self, jobs: list[Job]) -> None:
        """Give back received jobs the worker will not run (it is stopping)."""
        ...

    async def abandon(self, jobs: list[Job]) -> None:
        """Let go of jobs a hung worker holds: another worker takes them over, or they are answered 503."""
        ...

    async def heartbeat(self) -> None:
        """Tell the queue this worker is alive and still holds its jobs."""
        ...

    async def record(self, units: float, seconds: float) -> None:
        """A batch of `units` cost took `seconds` of this worker's time (admission's rate)."""
        ...
