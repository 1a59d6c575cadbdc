"""The Redis Streams broker on a real Redis: round trip, acks, admission, deadlines, reclaim, dead letters."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from service.errors import DeadlineExceeded, QueueFull, ServiceError
from service.gpu.worker import Worker
from service.queue.broker import Preview, Result
from service.queue.codec import decode_job
from service.queue.jobs import Job, Made, Slice
from service.queue.redis_broker import RedisBroker
from tests.conftest import tiny_model_config
from tests.service.fakes import FAKE_MODEL, fake_execute, fake_job, fake_png, fake_preview

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("PAELLA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REPO = Path(__file__).resolve().parents[2]
PROC = "tests.service.redis_worker_proc"  # batches take 0.5 s, longer than the 0.4 s claim idle time


def job(n: int = 2, timeout_s: float = 20.0, key: str = "k") -> Job:
    return fake_job(list(range(100, 100 + n)), key, timeout_s=timeout_s)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


Scenario = Callable[[Redis, str], Awaitable[None]]


def run(scenario: Scenario) -> None:
    """Run `scenario(client, prefix)` with a fresh key prefix, deleting its keys afterwards."""

    async def wrapper() -> None:
        client = Redis.from_url(REDIS_URL)
        try:
            await client.ping()
        except Exception as e:  # pragma: no cover - environment without Redis
            pytest.skip(f"no Redis at {REDIS_URL}: {e}")
        prefix = f"test-{uuid.uuid4().hex[:10]}"
        try:
            await scenario(client, prefix)
        finally:
            keys = [k async for k in client.scan_iter(f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()

    asyncio.run(wrapper())


def test_round_trip_through_a_worker() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = RedisBroker(client, prefix=prefix, model=FAKE_MODEL)
        queue = RedisBroker(client, prefix=prefix, model=FAKE_MODEL, consumer="w1")
        worker = Worker(queue, fake_execute, max_batch_size=4, max_wait_ms=10, poll_s=0.05)
        task = asyncio.create_task(worker.run())
        jobs = [job(n, key=f"k{n % 2}") for n in (1, 3, 2, 4)]
        answers = await asyncio.gather(*(api.submit(j) for j in jobs))
        worker.stop()
        await task
        for j, answer in zip(jobs, answers, strict=True):
            assert answer == [fake_png(j, s) for s in j.seeds]
        assert await client.xlen(api.stream) == 0
        assert await api.depth() == 0
        assert await client.exists(*(api.result_key(j.id) for j in jobs)) == 0
        assert await api.ping()

    run(scenario)


def test_results_have_a_ttl_and_the_entry_is_acked_only_once_all_are_stored() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = RedisBroker(client, prefix=prefix, model=FAKE_MODEL)
        queue = RedisBroker(client, prefix=prefix, model=FAKE_MODEL, consumer="w1", result_ttl_s=60)
        j = job(3)
        answer = await api.enqueue(j)
        [delivery] = await queue.receive(max_jobs=4, timeout_s=1)
        assert delivery.job == j and delivery.start == 0
        await queue.complete(Slice(j, 0, 2), [b"a", b"b"])
        assert await client.llen(api.result_key(j.id)) == 2
        assert 0 < await client.ttl(api.result_key(j.id)) <= 60
        assert 0 < await client.ttl(api.done_key(j.id)) <= 60
        assert (await client.xpending(api.stream, api.group))["pending"] == 1
        assert await client.xlen(api.stream) == 1 and await api.depth() == 3
        await queue.complete(Slice(j, 2, 3), [b"c"])
        assert (await client.xpending(api.stream, api.group))["pending"] == 0
        assert await client.xlen(api.stream) == 0 and await api.depth() == 0
        assert [event.data async for event in answer] == [b"a", b"b", b"c"]

    run(scenario)


def test_admission_rejects_above_the_depth_before_enqueueing() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = RedisBroker(client, prefix=prefix, model=FAKE_MODEL, max_queue_depth=4, retry_after_s=3)
        await api.enqueue(job(3))
        with pytest.raises(QueueFull) as info:
            await api.submit(job(2))
        assert (info.value.status, info.value.retry_after_s) == (503, 3)
        assert await client.xlen(api.stream) == 1 and await api.depth() == 3
        await api.enqueue(job(1))  # still fits exactly
        assert await api.depth() == 4

    run(scenario)


def test_deadline_gives_504_and_the_worker_drops_the_entry() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = RedisBroker(client, prefix=prefix, model=FAKE_MODEL)
        queue = RedisBroker(client, prefix=prefix, model=FAKE_MODEL, consumer="w1")
        j = job(2, timeout_s=0.2)
        with pytest.raises(DeadlineExceeded) as info:
            await api.submit(j)  # no worker is running
        assert info.value.status == 504
        executed: list[Slice] = []

        def execute(batch: list[Slice]) -> list[Made]:
            executed.extend(batch)
            return fake_execute(batch)

        worker = Worker(queue, execute, max_batch_size=4, max_wait_ms=0)
        task = asyncio.create_task(worker.run())
        answer = await client.blpop(
            [api.result_key(j.id)], timeout=10
        )  # the worker's answer to the late entry
        worker.stop()
        await task
        assert answer is not None and b"deadline_exceeded" in answer[1]
        assert executed == []
        assert await client.xlen(api.stream) == 0 and await api.depth() == 0

    run(scenario)


def test_reclaimed_partly_done_job_resumes_and_stores_each_image_once() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = RedisBroker(client, prefix=prefix, model=FAKE_MODEL)
        a = RedisBroker(client, prefix=prefix, model=FAKE_MODEL, consumer="a", claim_idle_ms=50)
        b = RedisBroker(client, prefix=prefix, model=FAKE_MODEL, consumer="b", claim_idle_ms=50)
        j = job(4)
        answer = await api.enqueue(j)
        assert len(await a.receive(4, 0)) == 1
        await a.complete(Slice(j, 0, 2), [b"0", b"1"])  # then worker a stalls
        await asyncio.sleep(0.1)
        redeliveries = sample("paella_redeliveries_total")
        [again] = await b.receive(4, 0)
        assert again.job == j and again.start == 2
        assert sample("paella_redeliveries_total") == redeliveries + 1
        await b.complete(Slice(j, 2, 4), [b"2", b"3"])
        await a.complete(Slice(j, 2, 4), [b"2", b"3"])  # the stalled worker finishes late: no duplicates
        assert [event.data async for event in answer] == [b"0", b"1", b"2", b"3"]
        assert await client.llen(api.result_key(j.id)) == 0
        assert await api.depth() == 0 and await client.xlen(api.stream) == 0

    run(scenario)


def test_released_jobs_are_reclaimed_at_once() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = RedisBroker(client, prefix=prefix, model=FAKE_MODEL)
        a = RedisBroker(client, prefix=prefix, model=FAKE_MODEL, consumer="a", claim_idle_ms=60_000)
        b = RedisBroker(client, prefix=prefix, model=FAKE_MODEL, consumer="b", claim_idle_ms=60_000)
        j = job(1)
        await api.enqueue(j)
        [first] = await a.receive(4, 0)
        await a.release([first.job])
        [again] = await b.receive(4, 0)
        assert again.job == j

    run(scenario)


def test_dead_letter_after_max_deliveries_answers_an_error() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = RedisBroker(client, prefix=prefix, model=FAKE_MODEL)
        workers = [
            RedisBroker(
                client, prefix=prefix, model=FAKE_MODEL, consumer=c, claim_idle_ms=50, max_deliveries=2
            )
            for c in "abc"
        ]
        j = job(2)
        answer = await api.enqueue(j)
        assert len(await workers[0].receive(4, 0)) == 1  # delivery 1; the worker dies
        await asyncio.sleep(0.1)
        assert len(await workers[1].receive(4, 0)) == 1  # delivery 2; dies too
        await asyncio.sleep(0.1)
        before = sample("paella_dead_letters_total")
        assert await workers[2].receive(4, 0) == []  # delivery 3 > 2: dead-lettered
        assert sample("paella_dead_letters_total") == before + 1
        dead_letters: Any = await client.xrange(api.dead_key(FAKE_MODEL))
        [(_, dead)] = dead_letters
        assert decode_job(dead[b"job"]) == j
        with pytest.raises(ServiceError) as info:
            await anext(answer)
        assert (info.value.status, info.value.code) == (500, "worker_failed")
        assert await client.xlen(api.stream) == 0 and await api.depth() == 0

    run(scenario)


def test_sigkill_of_one_worker_mid_batch_still_answers_every_request_once() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        procs = {
            name: subprocess.Popen(
                [sys.executable, "-m", PROC, REDIS_URL, prefix, name, "0.5", "400"],
                cwd=REPO,
            )
            for name in ("w1", "w2")
        }
        try:
            for _ in procs:
                assert await client.blpop([f"{prefix}:test:ready"], timeout=30) is not None
            api = RedisBroker(client, prefix=prefix, model=FAKE_MODEL)
            jobs = [job(2, timeout_s=30, key=f"k{i % 2}") for i in range(12)]
            answers = asyncio.gather(*(api.submit(j) for j in jobs), return_exceptions=True)
            started: Any = await client.blpop([f"{prefix}:test:started"], timeout=30)
            assert started is not None
            victim = started[1].decode()
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            results = await answers
            for j, result in zip(jobs, results, strict=True):
                assert result == [fake_png(j, s) for s in j.seeds]
            assert await client.xlen(api.stream) == 0 and await api.depth() == 0
            assert (await client.xpending(api.stream, api.group))["pending"] == 0
            assert await client.exists(*(api.result_key(j.id) for j in jobs)) == 0  # nothing pushed twice
            for j in jobs:
                assert await client.hlen(api.done_key(j.id)) == 2
            log: Any = await client.lrange(f"{prefix}:test:computed", 0, -1)
            computed = Counter(x.decode() for x in log)
            survivor = next(name for name in procs if name != victim)
            assert all(n == 1 for line, n in computed.items() if line.startswith(survivor))
            assert {line.split(" ", 1)[1] for line in computed if line.startswith(survivor)} | {
                line.split(" ", 1)[1] for line in computed if line.startswith(victim)
            } == {f"{j.id} {i}" for j in jobs for i in range(2)}
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                proc.wait(timeout=10)

    run(scenario)


def test_previews_cross_redis_before_their_images() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = RedisBroker(client, prefix=prefix)
        queue = RedisBroker(client, prefix=prefix, model=FAKE_MODEL, consumer="w1")
        worker = Worker(queue, fake_execute, max_batch_size=4, max_wait_ms=10, poll_s=0.05)
        task = asyncio.create_task(worker.run())
        j = fake_job([7, 8], previews=2)
        events = [event async for event in await api.enqueue(j)]
        worker.stop()
        await task
        previews = [
            Preview(i, k, fake_preview(j, seed, k)) for i, seed in enumerate(j.seeds) for k in range(2)
        ]
        assert events == [*previews, *(Result(i, fake_png(j, seed)) for i, seed in enumerate(j.seeds))]

    run(scenario)


def test_models_are_listed_while_their_workers_beat_and_each_has_its_own_queue() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = RedisBroker(client, prefix=prefix, claim_idle_ms=1500)  # listed for 1.5 s after a beat
        wide = dataclasses.replace(tiny_model_config(), name="tiny-wide", image_size=64)
        workers = {
            config.name: RedisBroker(client, prefix=prefix, model=config.name, claim_idle_ms=1500)
            for config in (tiny_model_config(), wide)
        }
        assert await api.models() == []
        await workers["tiny"].announce(tiny_model_config())
        await workers["tiny-wide"].announce(wide)
        assert await api.models() == [tiny_model_config(), wide]  # the whole config, by name
        with pytest.raises(ValueError):
            await workers["tiny"].announce(wide)
        for name, n in (("tiny", 1), ("tiny-wide", 2)):
            j = fake_job([1] * n)
            j.model = name
            await api.enqueue(j)
        assert [len(await w.receive(4, 0)) for w in workers.values()] == [1, 1]  # each its own model's job
        assert await api.depth() == 3
        await asyncio.sleep(1.0)
        await workers["tiny-wide"].heartbeat()
        await asyncio.sleep(0.7)
        assert [m.name for m in await api.models()] == ["tiny-wide"]  # tiny's worker went silent
        await asyncio.sleep(1.7)
        assert await api.models() == []
        assert await client.exists(api.model_key("tiny"), api.model_key("tiny-wide")) == 0

    run(scenario)
