"""What the handlers reach through the app: the queue, the intake and, when embedded, the worker."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from service.errors import not_ready, worker_unavailable
from service.http.intake import Intake
from service.http.limits import Limits
from service.queue.broker import Broker
from service.queue.jobs import Job

if TYPE_CHECKING:
    from service.gpu.worker import Worker


@dataclass
class Runtime:
    """Filled in by the lifespan as the model loads; empty fields mean "not ready yet"."""

    limits: Limits = field(default_factory=lambda: Limits(None, None))
    broker: Broker | None = None
    intake: Intake | None = None
    worker: Worker | None = None
    worker_task: asyncio.Task[None] | None = None
    failure: str | None = None
    draining: bool = False  # set on SIGTERM: not ready any more, still serving

    async def submit(self, job: Job) -> list[bytes]:
        if self.broker is None:
            raise not_ready("the service is starting")
        if self.worker is not None and not self.worker.alive:
            raise worker_unavailable()
        return await self.broker.submit(job)

    def alive(self) -> bool:
        """Liveness: False when this process cannot serve any more (start-up failed, worker hung or dead)."""
        if self.failure is not None:
            return False
        if self.worker is not None and not self.worker.alive:
            return False
        task = self.worker_task
        return task is None or not task.done() or task.cancelled() or task.exception() is None

    async def not_ready(self) -> str | None:
        """Why the service cannot take work now, or None when it can."""
        if self.failure is not None:
            return "start-up failed"
        if self.draining:
            return "shutting down"
        if self.broker is None or self.intake is None:
            return "loading the model"
        if self.worker is not None and not self.worker.alive:
            return "the worker is not running"
        if self.worker is not None and not self.worker.ready.is_set():
            return "warming up"
        try:
            if not await self.broker.ping():
                return "the queue is unreachable"
            if self.worker is None and await self.broker.live_workers() == 0:
                return "no worker is alive"
        except Exception:
            return "the queue is unreachable"
        return None

    async def refresh_depth(self) -> None:
        """Read the queue depth into `paella_queue_depth` (other processes move it between requests)."""
        if self.broker is not None:
            with contextlib.suppress(Exception):  # a scrape must not fail because Redis is away
                await self.broker.depth()

    async def close(self) -> None:
        """Stop the worker after its batch in hand, then answer what is left and close the queue."""
        if self.worker is not None:
            self.worker.stop()
        if self.worker_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker_task
        if self.broker is not None:
            await self.broker.close()
