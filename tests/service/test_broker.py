"""The in-process broker's admission, answers and deadlines, driven through its worker side by hand."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.errors import DeadlineExceeded, QueueFull, ServiceError
from service.queue.broker import Preview, Result
from service.queue.inprocess import InProcessBroker
from service.queue.jobs import Job, Slice
from tests.conftest import tiny_model_config
from tests.service.fakes import fake_job


def job(n: int = 2, timeout_s: float = 30.0) -> Job:
    return fake_job(list(range(10, 10 + n)), timeout_s=timeout_s)


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
        with pytest.raises(QueueFull) as info:
            await broker.submit(job(2))
        assert info.value.status == 503 and info.value.headers == {"Retry-After": "7"}
        assert await broker.depth() == 3
        assert len(await broker.receive(max_jobs=8, timeout_s=0)) == 1
        await broker.close()
        with pytest.raises(ServiceError) as closed:
            await first
        assert (closed.value.status, closed.value.code) == (503, "shutting_down")

    asyncio.run(scenario())


def test_deadline_passes_while_queued() -> None:
    async def scenario() -> None:
        broker = InProcessBroker(max_queue_depth=4)
        with pytest.raises(DeadlineExceeded) as info:
            await broker.submit(job(1, timeout_s=0.02))
        assert info.value.status == 504
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


def test_previews_come_before_their_image_and_plain_submits_skip_them() -> None:
    async def scenario() -> None:
        broker = InProcessBroker(max_queue_depth=8)
        j = job(2)
        answer = await broker.enqueue(j)
        await broker.receive(max_jobs=1, timeout_s=1)
        await broker.preview(Slice(j, 0, 2), [[b"a0", b"a1"], [b"b0", b"b1"]])
        await broker.complete(Slice(j, 0, 2), [b"a", b"b"])
        events = [event async for event in answer]
        assert events == [
            Preview(0, 0, b"a0"),
            Preview(0, 1, b"a1"),
            Preview(1, 0, b"b0"),
            Preview(1, 1, b"b1"),
            Result(0, b"a"),
            Result(1, b"b"),
        ]
        assert await broker.depth() == 0

    asyncio.run(scenario())


def test_the_models_are_those_its_worker_announced() -> None:
    async def scenario() -> None:
        broker = InProcessBroker(max_queue_depth=8)
        assert await broker.models() == []
        await broker.announce(tiny_model_config())
        assert [m.name for m in await broker.models()] == ["tiny"]

    asyncio.run(scenario())
