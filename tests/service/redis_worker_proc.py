"""A `paella worker` stand-in for the fault tests: a Worker on a RedisBroker with a slow fake executor,
serving the model `fake` (the tiny model's config under that name).

Usage: python -m tests.service.redis_worker_proc URL PREFIX CONSUMER DELAY_S CLAIM_IDLE_MS [MAX_BATCH]
Pushes its consumer name to `{PREFIX}:test:ready` once ready and to `{PREFIX}:test:started` when a
batch starts; logs each computed image as `consumer job i` to `{PREFIX}:test:computed`. A batch holding
a job whose prompt is `poison` kills the process (exit 17), as a crashing CUDA kernel would. SIGTERM
stops it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time

import redis

from model.ops import Generate
from service.gpu.worker import Worker
from service.queue.jobs import Made, Slice
from service.queue.redis_broker import RedisBroker
from tests.conftest import tiny_model_config
from tests.service.fakes import FAKE_MODEL, fake_execute

POISON = "poison"


async def main(
    url: str, prefix: str, consumer: str, delay_s: float, claim_idle_ms: int, max_batch: int
) -> None:
    log = redis.Redis.from_url(url)

    def execute(slices: list[Slice]) -> list[Made]:
        log.rpush(f"{prefix}:test:started", consumer)
        time.sleep(delay_s)
        if any(isinstance(s.job.op, Generate) and s.job.op.prompt == POISON for s in slices):
            os._exit(17)
        for s in slices:
            for i in range(s.start, s.stop):
                log.rpush(f"{prefix}:test:computed", f"{consumer} {s.job.id} {i}")
        return fake_execute(slices)

    broker = RedisBroker(url, prefix=prefix, model=FAKE_MODEL, consumer=consumer, claim_idle_ms=claim_idle_ms)
    model = dataclasses.replace(tiny_model_config(), name=FAKE_MODEL)
    worker = Worker(broker, execute, max_batch_size=max_batch, max_wait_ms=20, poll_s=0.05, model=model)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
    task = asyncio.create_task(worker.run())
    await worker.ready.wait()
    log.rpush(f"{prefix}:test:ready", consumer)
    await task
    await broker.close()
    log.close()


if __name__ == "__main__":
    url, prefix, consumer, delay, idle = sys.argv[1:6]
    batch = int(sys.argv[6]) if len(sys.argv) > 6 else 4
    asyncio.run(main(url, prefix, consumer, float(delay), int(idle), batch))
