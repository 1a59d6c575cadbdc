"""The Redis Streams broker on a real Redis: round trip, acks, admission, deadlines, reclaim, dead letters."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from model.config import ModelConfig, SamplerConfig
from model.ops import Generate
from service.errors import DeadlineExceeded, QueueFull, ServiceError
from service.gpu.worker import Worker
from service.queue.admission import Admission
from service.queue.broker import Preview, Result
from service.queue.jobs import Job, Made, Slice
from service.queue.redis_api import RATE_CACHE_S
from service.queue.redis_broker import RedisBroker
from tests.conftest import tiny_model_config
from tests.service.fakes import FAKE_MODEL, fake_execute, fake_job, fake_png, fake_preview

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("PAELLA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REPO = Path(__file__).resolve().parents[2]
PROC = "tests.service.redis_worker_proc"  # batches take 0.5 s, longer than the 0.4 s claim idle time


def job(n: int = 2, timeout_s: float = 20.0, key: str = "k") -> Job:
    return fake_job(list(range(100, 100 + n)), key, timeout_s=timeout_s)


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 5.0) -> bool:
    """Whether `check()` turns true within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.01)
    return False


def tiny_fake_model() -> ModelConfig:
    return dataclasses.replace(tiny_model_config(), name=FAKE_MODEL)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


Scenario = Callable[[Redis, str], Awaitable[None]]
OPEN: list[RedisBroker] = []


def broker(client: Redis, prefix: str, **kwargs: Any) -> RedisBroker:
    """A broker on the test's client, closed (its reply listener stopped) when the scenario ends."""
    made = RedisBroker(client, prefix=prefix, **{"model": FAKE_MODEL, **kwargs})
    OPEN.append(made)
    return made


def run(scenario: Scenario) -> None:
    """Run `scenario(client, prefix)` with a fresh key prefix, deleting its keys afterwards."""

    async def wrapper() -> None:
        client = Redis.from_url(REDIS_URL, socket_timeout=None)  # BLPOPs below wait on workers starting
        try:
            await client.ping()
        except Exception as e:  # pragma: no cover - a Redis test fails without Redis
            pytest.fail(f"no Redis at {REDIS_URL}: {e} (scripts/ensure-redis.sh starts one)")
        prefix = f"test-{uuid.uuid4().hex[:10]}"
        try:
            await scenario(client, prefix)
        finally:
            while OPEN:
                await OPEN.pop().close()
            keys = [k async for k in client.scan_iter(f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()

    asyncio.run(wrapper())


def test_round_trip_through_a_worker() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = broker(client, prefix)
        queue = broker(client, prefix, consumer="w1")
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
        assert await client.llen(api.reply_key(api.consumer)) == 0  # every message routed
        assert await api.ping()

    run(scenario)


def test_a_lost_job_check_during_admission_does_not_call_the_job_lost() -> None:
    """A job waits for its answers from before its admission script writes its marker; the listener's
    check for lost jobs, landing in that window, must not answer it 503 `queue_lost` (300 concurrent
    requests hit this window once in a CI run)."""

    async def scenario(client: Redis, prefix: str) -> None:
        api = broker(client, prefix)
        queue = broker(client, prefix, consumer="w1")
        admit = api._admit

        async def check_then_admit(*args: Any, **kwargs: Any) -> Any:
            await api._check_lost()  # as the listener would, between waiting and admission
            return await admit(*args, **kwargs)

        api._admit = check_then_admit  # type: ignore[assignment]
        worker = Worker(queue, fake_execute, max_batch_size=4, max_wait_ms=10, poll_s=0.05)
        task = asyncio.create_task(worker.run())
        try:
            lone = job(2)
            assert await api.submit(lone) == [fake_png(lone, s) for s in lone.seeds]
        finally:
            worker.stop()
            await task
        gone = job(1)  # admitted, then its marker lost (as a Redis restart without its data loses it)
        events = await api.enqueue(gone)
        await client.delete(api.job_key(gone.id))
        await api._check_lost()
        with pytest.raises(ServiceError) as lost:
            await anext(events)
        assert (lost.value.status, lost.value.code) == (503, "queue_lost")

    run(scenario)


def test_results_have_a_ttl_and_the_entry_is_acked_only_once_all_are_stored() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = broker(client, prefix)
        queue = broker(client, prefix, consumer="w1", result_ttl_s=60)
        j = job(3)
        answer = await api.enqueue(j)
        [delivery] = await queue.receive(max_images=4, timeout_s=1)
        assert delivery.job.id == j.id and delivery.start == 0
        await queue.complete(Slice(j, 0, 2), [b"a", b"b"])
        assert 0 < await client.ttl(api.done_key(j.id)) <= 60
        assert 20 < await client.ttl(api.job_key(j.id)) <= 20 + 300  # the marker: deadline + result ttl
        assert (await client.xpending(api.stream, api.group))["pending"] == 1
        assert await client.xlen(api.stream) == 1 and await api.depth() == 3
        await queue.complete(Slice(j, 2, 3), [b"c"])
        assert (await client.xpending(api.stream, api.group))["pending"] == 0
        assert await client.xlen(api.stream) == 0 and await api.depth() == 0
        assert [event.data async for event in answer] == [b"a", b"b", b"c"]

    run(scenario)


def costly(n: int, timeout_s: float = 20.0) -> Job:
    """A job of `n` cost units: n pictures of 256x256 at 8 steps."""
    return Job.new(
        Generate("a red circle", 256, 256),
        list(range(n)),
        SamplerConfig(steps=8),
        timeout_s,
        model=FAKE_MODEL,
    )


def test_admission_counts_cost_against_the_workers_measured_rate() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = broker(client, prefix, model=None, admission=Admission(16, max_queue_wait_s=2, retry_after_s=3))
        worker = broker(client, prefix, consumer="w1")
        with pytest.raises(ServiceError) as too_large:
            await api.enqueue(costly(17))  # more than the queue ever holds: not worth retrying
        assert (too_large.value.status, too_large.value.code) == (413, "request_too_large")
        await api.enqueue(costly(8))  # no rate measured yet: up to the cap
        with pytest.raises(QueueFull) as full:
            await api.enqueue(costly(9))
        assert full.value.retry_after_s == 3  # no rate: the configured Retry-After
        assert await api.depth() == 8 and await client.xlen(api.stream_key(FAKE_MODEL)) == 1
        await worker.record(units=4, seconds=2.0)  # 2 units a second: 2 s of wait admit 4 units
        await worker.announce(tiny_fake_model())  # the heartbeat publishes the rate
        await asyncio.sleep(RATE_CACHE_S)
        with pytest.raises(QueueFull) as slow:
            await api.enqueue(costly(2))
        assert slow.value.retry_after_s == 3  # (8 + 2 - 4) units at 2 units/s
        assert slow.value.headers["Retry-After"] == "3"
        with pytest.raises(QueueFull) as slower:
            await api.enqueue(costly(8))
        assert slower.value.retry_after_s == 6  # (8 + 8 - 4) / 2
        assert await api.depth() == 8

    run(scenario)


def test_deadline_gives_504_and_the_worker_drops_the_entry() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = broker(client, prefix)
        queue = broker(client, prefix, consumer="w1")
        j = job(2, timeout_s=0.2)
        with pytest.raises(DeadlineExceeded) as info:
            await api.submit(j)  # no worker is running
        assert info.value.status == 504
        executed: list[Slice] = []

        def execute(batch: list[Slice]) -> list[Made]:
            executed.extend(batch)
            return fake_execute(batch)

        assert await eventually(lambda: client.hexists(api.done_key(j.id), "cancelled"))  # nobody waits now
        worker = Worker(queue, execute, max_batch_size=4, max_wait_ms=0)
        task = asyncio.create_task(worker.run())
        for _ in range(200):
            if await client.xlen(api.stream) == 0:
                break
            await asyncio.sleep(0.02)
        worker.stop()
        await task
        assert executed == []
        assert await client.xlen(api.stream) == 0 and await api.depth() == 0

    run(scenario)


def test_reclaimed_partly_done_job_resumes_and_stores_each_image_once() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = broker(client, prefix)
        a = broker(client, prefix, consumer="a", claim_idle_ms=50)
        b = broker(client, prefix, consumer="b", claim_idle_ms=50)
        j = job(4)
        answer = await api.enqueue(j)
        assert len(await a.receive(4, 0)) == 1
        await a.complete(Slice(j, 0, 2), [b"0", b"1"])  # then worker a stalls
        await asyncio.sleep(0.1)
        redeliveries = sample("paella_redeliveries_total")
        [again] = await b.receive(4, 0)
        assert (
            again.job.id == j.id and again.start == 2 and again.suspect
        )  # its worker stalled with it: alone
        assert sample("paella_redeliveries_total") == redeliveries + 1
        assert await b.receive(4, 0) == []  # holding a suspect, b takes nothing else meanwhile
        await b.complete(Slice(j, 2, 4), [b"2", b"3"])
        await a.complete(Slice(j, 2, 4), [b"2", b"3"])  # the stalled worker finishes late: no duplicates
        assert [event.data async for event in answer] == [b"0", b"1", b"2", b"3"]
        assert await client.llen(api.reply_key(api.consumer)) == 0
        assert await api.depth() == 0 and await client.xlen(api.stream) == 0

    run(scenario)


def test_released_jobs_go_back_at_once_and_cost_no_delivery() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = broker(client, prefix)
        a = broker(client, prefix, consumer="a", claim_idle_ms=60_000)
        b = broker(client, prefix, consumer="b", claim_idle_ms=60_000)
        j = job(1)
        await api.enqueue(j)
        [first] = await a.receive(4, 0)
        await a.release([first.job])
        [again] = await b.receive(4, 0)
        assert again.job.id == j.id and not again.suspect
        [pending] = await client.xpending_range(api.stream, api.group, "-", "+", 10)
        assert (pending["consumer"], pending["times_delivered"]) == (b"b", 1)
        assert await api.depth() == 1

    run(scenario)


def test_dead_letter_after_max_deliveries_answers_an_error() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = broker(client, prefix)
        workers = [broker(client, prefix, consumer=c, claim_idle_ms=50, max_deliveries=2) for c in "abc"]
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
        assert dead[b"job"].decode() == j.id and int(dead[b"deliveries"]) == 3  # no payload kept
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
            api = broker(client, prefix)
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
            assert await client.llen(api.reply_key(api.consumer)) == 0
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
        api = broker(client, prefix, model=None)
        queue = broker(client, prefix, consumer="w1")
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
        api = broker(client, prefix, model=None, claim_idle_ms=1500)  # listed for 1.5 s after a beat
        wide = dataclasses.replace(tiny_model_config(), name="tiny-wide", image_size=64)
        workers = {
            config.name: broker(client, prefix, model=config.name, claim_idle_ms=1500)
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


def test_a_worker_takes_what_fits_its_batch_by_images_not_entries() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api = broker(client, prefix, model=None)
        a, b = broker(client, prefix, consumer="a"), broker(client, prefix, consumer="b")
        jobs = [job(n) for n in (3, 3, 2, 8, 1)]
        for j in jobs:
            await api.enqueue(j)
        assert [d.job.n for d in await a.receive(8, 0)] == [3, 3, 2]  # 8 images: the batch is full
        assert [d.job.n for d in await b.receive(4, 0)] == [8]  # too big for the room, but never starved
        assert [d.job.n for d in await a.receive(8, 0)] == [1]
        assert await b.receive(8, 0) == []

    run(scenario)


def test_a_withdrawn_job_is_dropped_before_compute_and_frees_the_queue() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api, queue = broker(client, prefix, model=None), broker(client, prefix, consumer="w1")
        kept, gone = job(1), job(2)
        await api.enqueue(kept)
        client_of_gone = asyncio.create_task(api.submit(gone))
        await asyncio.sleep(0.05)
        batch = [Slice(d.job, 0, d.job.n) for d in await queue.receive(8, 0)]
        client_of_gone.cancel()  # its client left
        assert await eventually(lambda: client.hexists(api.done_key(gone.id), "cancelled"))
        assert [p.job.id for p in await queue.wanted(batch)] == [kept.id]
        assert await api.depth() == 1 and await client.xlen(queue.stream) == 1

    run(scenario)


def test_deadlines_are_on_the_redis_clock_whatever_the_hosts_clocks_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        api, queue = broker(client, prefix, model=None), broker(client, prefix, consumer="w1")
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 3600)  # the API's host runs an hour ahead
        j = job(1, timeout_s=20)
        await api.enqueue(j)
        monkeypatch.setattr(time, "time", real)
        [delivery] = await queue.receive(4, 0)
        seconds, micros = await client.time()
        assert abs(delivery.job.deadline - (seconds + micros / 1e6 + 20)) < 1.0
        assert abs(queue.clock() - real()) < 1.0

    run(scenario)


def test_dead_letters_keep_no_payload_and_stay_bounded() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        queue = broker(client, prefix, consumer="w1")
        j = job(1)
        keys = [
            *queue._counters(j),
            queue.done_key(j.id),
            queue.reply_key("nobody"),
            queue.dead_key(FAKE_MODEL),
        ]
        for k in range(1500):
            await queue._fail(keys=keys, args=[queue.group, f"1-{k}", 1, 0, 60, "{}", f"job{k}", 4])
        length = await client.xlen(queue.dead_key(FAKE_MODEL))
        assert 1000 <= length < 1200
        [(_, last)] = await client.xrevrange(queue.dead_key(FAKE_MODEL), count=1)
        assert set(last) == {b"job", b"entry", b"deliveries", b"error"} and last[b"job"] == b"job1499"

    run(scenario)
