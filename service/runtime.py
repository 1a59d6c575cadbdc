"""What the handlers reach through the app: the queue, the intake and, when embedded, the worker."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from service.broker import Broker
from service.errors import ApiError
from service.intake import Intake
from service.jobs import Job
from service.worker import Worker


@dataclass
class Runtime:
    """Filled in by the lifespan as the model loads; empty fields mean "not ready yet"."""

    broker: Broker | None = None
    intake: Intake | None = None
    worker: Worker | None = None
    worker_task: asyncio.Task[None] | None = None
    failure: str | None = None

    async def submit(self, job: Job) -> list[bytes]:
        if self.broker is None:
            raise ApiError(503, "not_ready", "the service is starting", headers={"Retry-After": "1"})
        return await self.broker.submit(job)

    async def not_ready(self) -> str | None:
        """Why the service cannot take work now, or None when it can."""
        if self.failure is not None:
            return self.failure
        if self.broker is None or self.intake is None:
            return "loading the model"
        if self.worker is not None and not self.worker.ready.is_set():
            return "warming up"
        try:
            reachable = await self.broker.ping()
        except Exception as e:
            return f"the queue is unreachable: {e}"
        return None if reachable else "the queue is unreachable"

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
