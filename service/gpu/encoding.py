"""The encoding pool: finished batches' pictures and previews turned into bytes in threads, while the GPU
thread runs the next batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from service.queue.jobs import Encoding, Made


class EncodingPool:
    """`encode(picture, encoding)` in `threads` threads, for at most `max_batches` batches at once.

    `submit` runs a batch's encoding (and whatever follows it) as a task, once there is room: the worker
    waits there rather than pile up pictures faster than they are encoded."""

    def __init__(self, encode: Callable[[Any, Encoding], bytes], *, threads: int, max_batches: int) -> None:
        self.encode = encode
        self.max_batches = max_batches
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="paella-encode")
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, work: Coroutine[Any, Any, None]) -> None:
        while len(self._running) >= self.max_batches:
            await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def made(self, made: Made, encoding: Encoding) -> Made:
        """One slice's pictures and previews as bytes, all encoded at once."""
        loop = asyncio.get_running_loop()

        async def encoded(pictures: list[Any]) -> list[bytes]:
            jobs = (loop.run_in_executor(self._threads, self.encode, p, encoding) for p in pictures)
            return list(await asyncio.gather(*jobs))

        pictures, previews = await asyncio.gather(
            encoded(made.pictures), asyncio.gather(*(encoded(p) for p in made.previews))
        )
        return Made(pictures, list(previews))

    async def drain(self) -> None:
        """Wait for every batch submitted."""
        await asyncio.gather(*self._running)

    def shutdown(self) -> None:
        self._threads.shutdown(wait=True)
