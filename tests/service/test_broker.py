"""The in-process broker's admission, answers and deadlines, driven through its worker side by hand."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from service.broker import InProcessBroker
from service.jobs import DeadlineExceeded, Job, JobFailed, QueueFull, Slice


def job(n: int = 2, timeout_s: float = 30.0) -> Job:
    return Job.new("generations", "k", {"prompt": "x"}, list(range(10, 10 + n)), timeout_s)


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("paella_rejected_total", {"reason": reason}) or 0.0


def test_job_round_trips_through_json() -> None:
    j = job(3)
    assert Job.from_json(j.to_json()) == j


def test_submit_resolves_when_every_slice_is_stored() -> None:
    async def scenario() -> None:
        broker = InProcessBroker(max_queue_depth=8)
        j = job(3)
        answer = asyncio.create_task(broker.submit(j))
        [delivery] = await broker.receive(max_jobs=4, timeout_s=1)
        assert delivery.job is j and delivery.start == 0
        assert await broker.depth() == 3
        await broker.complete(Slice(j, 1, 3), [b"b", b"c"])
        await broker.complete(Slice(j, 1, 3), [b"b", b"c"])  # a repeat is harmless
        assert not answer.done()
        await broker.complete(Slice(j, 0, 1), [b"a"])
        assert await answer == [b"a", b"b", b"c"]
        assert await broker.depth() == 0

    asyncio.run(scenario())


def test_admission_rejects_before_enqueueing() -> None:
    async def scenario() -> None:
        broker = InProcessBroker(max_queue_depth=4, retry_after_s=7)
        first = asyncio.create_task(broker.submit(job(3)))
        await asyncio.sleep(0)
        before = rejected("queue_full")
        with pytest.raises(QueueFull) as info:
            await broker.submit(job(2))
        assert info.value.status == 503 and info.value.retry_after_s == 7
        assert rejected("queue_full") == before + 1
        assert await broker.depth() == 3
        assert len(await broker.receive(max_jobs=8, timeout_s=0)) == 1
        await broker.close()
        with pytest.raises(JobFailed) as closed:
            await first
        assert (closed.value.status, closed.value.code) == (503, "shutting_down")

    asyncio.run(scenario())


def test_deadline_passes_while_queued() -> None:
    async def scenario() -> None:
        broker = InProcessBroker(max_queue_depth=4)
        before = rejected("deadline_exceeded")
        with pytest.raises(DeadlineExceeded) as info:
            await broker.submit(job(1, timeout_s=0.02))
        assert info.value.status == 504
        assert rejected("deadline_exceeded") == before + 1
        # the worker still sees the job, drops it as expired, and that frees the depth
        [delivery] = await broker.receive(max_jobs=1, timeout_s=0)
        assert delivery.job.deadline < time.time()
        await broker.fail(delivery.job, DeadlineExceeded())
        assert await broker.depth() == 0

    asyncio.run(scenario())


def test_receive_times_out_empty() -> None:
    async def scenario() -> None:
        broker = InProcessBroker(max_queue_depth=4)
        assert await broker.receive(max_jobs=1, timeout_s=0.01) == []
        assert await broker.ping()

    asyncio.run(scenario())
