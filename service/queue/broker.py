"""The queue's two interfaces: `Broker` is what the HTTP side uses, `WorkQueue` what the worker uses.

`InProcessBroker` (`service.queue.inprocess`, for `paella serve`) and `RedisBroker`
(`service.queue.redis_broker`, for `paella api` + `paella worker`) implement both. Queue depth, for
admission and `paella_queue_depth`, counts the images of jobs admitted and not yet answered (queued,
batched or being computed). A job's answer is a stream of events: each image's previews (when the job asks
for them) before the image itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from model.config import ModelConfig
from service.errors import ServiceError
from service.queue.jobs import Job, Slice


@dataclass(frozen=True)
class Preview:
    """Preview `number` (0-based, in step order) of image `index` of a job, encoded."""

    index: int
    number: int
    data: bytes


@dataclass(frozen=True)
class Result:
    """Image `index` of a job, encoded."""

    index: int
    data: bytes


Event = Preview | Result


class Broker(Protocol):
    """The API's side of the queue."""

    async def enqueue(self, job: Job) -> AsyncIterator[Event]:
        """Admit `job` to the queue of its model, or raise `QueueFull` (503) or another `ServiceError`.

        Returns the job's answer: its previews and images as the workers store them, until all `n` images
        are in; iterating it raises `DeadlineExceeded` (504) or the `ServiceError` the job failed with.
        """
        ...

    async def submit(self, job: Job) -> list[bytes]:
        """`enqueue` and wait for the images, in seed order (`collect`)."""
        ...

    async def models(self) -> list[ModelConfig]:
        """The models that live workers serve, by name."""
        ...

    async def depth(self) -> int:
        """Images admitted and not yet answered."""
        ...

    async def ping(self) -> bool:
        """Whether the queue is reachable."""
        ...

    async def close(self) -> None: ...


async def collect(broker: Broker, job: Job) -> list[bytes]:
    """Enqueue `job` and wait for its images, in seed order; previews are passed over."""
    images: dict[int, bytes] = {}
    async for event in await broker.enqueue(job):
        if isinstance(event, Result):
            images[event.index] = event.data
    return [images[i] for i in range(job.n)]


class Delivery(NamedTuple):
    """A job handed to a worker; images before `start` were already stored by an earlier delivery. A
    `suspect` job was delivered before to a worker that vanished: it runs alone, so that a job that kills
    its worker takes no other job down with it."""

    job: Job
    start: int
    suspect: bool = False


class WorkQueue(Protocol):
    """The worker's side of the queue."""

    @property
    def heartbeat_interval_s(self) -> float | None:
        """How often the worker must call `heartbeat()` while it holds work; None: never."""
        ...

    async def announce(self, model: ModelConfig) -> None:
        """Tell the API side which model this worker serves, once it can take work; the model is listed
        while the worker is alive (for Redis: while it heartbeats)."""
        ...

    async def receive(self, max_images: int, timeout_s: float) -> list[Delivery]:
        """Jobs of about `max_images` images in all (at least one job), waiting at most `timeout_s` for the
        first: a worker takes what it can run next, not what other workers could run meanwhile."""
        ...

    async def wanted(self, batch: list[Slice]) -> list[Slice]:
        """The slices somebody still waits for: what the worker computes (the rest are dropped)."""
        ...

    async def preview(self, part: Slice, previews: list[list[bytes]]) -> None:
        """Publish the previews of a slice's images (per image, in step order) before `complete`."""
        ...

    async def complete(self, part: Slice, images: list[bytes]) -> None:
        """Store a slice's images; the job is acknowledged once all its images are stored."""
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

    def clock(self) -> float:
        """Seconds on the queue's clock, the one jobs' deadlines are set on."""
        ...
