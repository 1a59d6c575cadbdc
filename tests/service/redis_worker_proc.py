"""A `paella worker` stand-in for the reclaim test: a Worker on a RedisBroker with a slow fake executor.

Usage: python -m tests.service.redis_worker_proc URL PREFIX CONSUMER DELAY_S CLAIM_IDLE_MS
Pushes its consumer name to `{PREFIX}:test:ready` once ready and to `{PREFIX}:test:started` when a
batch starts; logs each computed image as `consumer job i` to `{PREFIX}:test:computed`. SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import redis

from service.gpu.worker import Worker
from service.queue.jobs import Made, Slice
from service.queue.redis_broker import RedisBroker
from tests.service.fakes import FAKE_MODEL, fake_execute


async def main(url: str, prefix: str, consumer: str, delay_s: float, claim_idle_ms: int) -> None:
    log = redis.Redis.from_url(url)

    def execute(slices: list[Slice]) -> list[Made]:
        log.rpush(f"{prefix}:test:started", consumer)
        time.sleep(delay_s)
        for s in slices:
            for i in range(s.start, s.stop):
                log.rpush(f"{prefix}:test:computed", f"{consumer} {s.job.id} {i}")
        return fake_execute(slices)

    broker = RedisBroker(url, prefix=prefix, model=FAKE_MODEL, consumer=consumer, claim_idle_ms=claim_idle_ms)
    worker = Worker(broker, execute, max_batch_size=4, max_wait_ms=20, poll_s=0.05)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
    task = asyncio.create_task(worker.run())
    await worker.ready.wait()
    log.rpush(f"{prefix}:test:ready", consumer)
    await task
    await broker.close()
    log.close()


if __name__ == "__main__":
    url, prefix, consumer, delay, idle = sys.argv[1:6]
    asyncio.run(main(url, prefix, consumer, float(delay), int(idle)))
