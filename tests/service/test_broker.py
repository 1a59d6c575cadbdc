"""The in-process broker's admission, answers and deadlines, driven through its worker side by hand."""

from __future__ import annotations

import asyncio

import pytest

from service.errors import DeadlineExceeded, QueueFull, ServiceError
from service.queue.admission import Admission, cost
from service.queue.broker import Preview, Result
from service.queue.inprocess import InProcessBroker
from service.queue.jobs import Job, Slice
from tests.conftest import tiny_model_config
from tests.service.fakes import fake_job, inprocess


def job(n: int = 2, timeout_s: float = 30.0) -> Job:
    return fake_job(list(range(10, 10 + n)), timeout_s=timeout_s)


def test_submit_resolves_when_every_slice_is_stored() -> None:
    async def scenario() -> None:
        broker = inprocess()
        j = job(3)
        answer = asyncio.create_task(broker.submit(j))
        [delivery] = await broker.receive(max_images=4, timeout_s=1)
        assert delivery.job is j and delivery.start == 0
        assert await broker.depth() == 3
        await broker.complete(Slice(j, 1, 3), [b"b", b"c"])
        await broker.complete(Slice(j, 1, 3), [b"b", b"c"])  # a repeat is harmless
        assert not answer.done()
        await broker.complete(Slice(j, 0, 1), [b"a"])
        assert await answer == [b"a", b"b", b"c"]
        assert await broker.depth() == 0

    asyncio.run(scenario())


def test_admission_counts_cost_and_refuses_before_enqueueing() -> None:
    async def scenario() -> None:
        unit = cost(job(1))
        broker = InProcessBroker(Admission(max_queue_cost=4 * unit, max_queue_wait_s=1e9, retry_after_s=7))
        first = asyncio.create_task(broker.submit(job(3)))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as info:
            await broker.submit(job(2))
        assert info.value.status == 503 and info.value.headers == {"Retry-After": "7"}  # no rate measured yet
        with pytest.raises(ServiceError) as too_large:
            await broker.submit(job(5))  # more than the queue ever holds: never "retry later"
        assert (too_large.value.status, too_large.value.code) == (413, "request_too_large")
        assert await broker.depth() == 3
        assert len(await broker.receive(max_images=8, timeout_s=0)) == 1
        await broker.close()
        with pytest.raises(ServiceError) as closed:
            await first
        assert (closed.value.status, closed.value.code) == (503, "shutting_down")

    asyncio.run(scenario())


def test_deadline_passes_while_queued() -> None:
    async def scenario() -> None:
        broker = inprocess()
        with pytest.raises(DeadlineExceeded) as info:
            await broker.submit(job(1, timeout_s=0.02))
        assert info.value.status == 504
        # nobody waits any more: the job is gone from the queue and its depth freed at once
        assert await broker.depth() == 0
        assert await broker.receive(max_images=1, timeout_s=0) == []

    asyncio.run(scenario())


def test_receive_times_out_empty() -> None:
    async def scenario() -> None:
        broker = inprocess()
        assert await broker.receive(max_images=1, timeout_s=0.01) == []
        assert await broker.ping()

    asyncio.run(scenario())


def test_admission_follows_the_measured_rate_and_says_when_to_come_back() -> None:
    async def scenario() -> None:
        unit = cost(job(1))
        broker = InProcessBroker(Admission(max_queue_cost=1000 * unit, max_queue_wait_s=2.0))
        await broker.record(10 * unit, 1.0)  # the worker does 10 images a second: 20 fit in 2 s
        waiting = [asyncio.create_task(broker.submit(job(5))) for _ in range(4)]
        await asyncio.sleep(0)
        assert await broker.depth() == 20
        with pytest.raises(QueueFull) as info:
            await broker.submit(job(5))
        assert info.value.headers == {"Retry-After": "1"}  # 5 images over, at 10 a second
        await broker.close()
        await asyncio.gather(*waiting, return_exceptions=True)

    asyncio.run(scenario())


def test_previews_come_before_their_image_and_plain_submits_skip_them() -> None:
    async def scenario() -> None:
        broker = inprocess()
        j = job(2)
        answer = await broker.enqueue(j)
        await broker.receive(max_images=1, timeout_s=1)
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


def test_a_withdrawn_job_is_never_handed_to_the_worker() -> None:
    async def scenario() -> None:
        broker = inprocess()
        waiting = asyncio.create_task(broker.submit(job(2)))
        await asyncio.sleep(0)
        [delivery] = await broker.receive(max_images=4, timeout_s=0)
        batch = [Slice(delivery.job, 0, 2)]
        assert await broker.wanted(batch) == batch
        waiting.cancel()  # the client left
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await broker.wanted(batch) == [] and await broker.depth() == 0

    asyncio.run(scenario())


def test_the_models_are_those_its_worker_announced() -> None:
    async def scenario() -> None:
        broker = inprocess()
        assert await broker.models() == []
        await broker.announce(tiny_model_config())
        assert [m.name for m in await broker.models()] == ["tiny"]

    asyncio.run(scenario())
