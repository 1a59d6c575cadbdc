"""A finished slice into the queue: its previews published, then its images stored, retried while the queue
fails."""

from __future__ import annotations

import asyncio
import logging

from service.queue.broker import WorkQueue
from service.queue.jobs import Made, Slice

log = logging.getLogger(__name__)

STORE_ATTEMPTS = 6  # tries to store a slice, 50 ms apart then doubling


async def deliver(queue: WorkQueue, part: Slice, made: Made) -> bool:
    """Publish a slice's previews (a courtesy: a failure is logged and the images still go), then store its
    images, retrying for about 3 s; False once that fails, for the caller to give the job up, so that
    another worker (or its deadline) answers it rather than hold it with nothing to store it in."""
    if any(made.previews):
        try:
            await queue.preview(part, made.previews)
        except Exception:
            log.warning("the previews of job %s were not sent", part.job.id, exc_info=True)
    delay = 0.05
    for attempt in range(STORE_ATTEMPTS):
        try:
            await queue.complete(part, made.pictures)
            return True
        except Exception:
            if attempt + 1 == STORE_ATTEMPTS:
                log.exception("could not store the images of job %s; giving it up", part.job.id)
                return False
            await asyncio.sleep(delay)
            delay *= 2
    return False
