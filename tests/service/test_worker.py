"""The worker on the in-process broker with a fake deterministic executor."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client import REGISTRY

from service.errors import DeadlineExceeded, ServiceError
from service.gpu.worker import Worker
from service.queue.inprocess import InProcessBroker
from service.queue.jobs import Encoding, Made, Slice
from tests.service.fakes import fake_execute, fake_job, fake_png, inprocess


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def with_worker(broker: InProcessBroker, worker: Worker, body: Callable[[], Awaitable[None]]) -> None:
    task = asyncio.create_task(worker.run())
    await worker.ready.wait()
    try:
        await body()
    finally:
        worker.stop()
        await task


def test_32_concurrent_requests_form_batches_with_per_seed_results() -> None:
    batches: list[int] = []

    def execute(slices: list[Slice]) -> list[Made]:
        batches.append(sum(s.n for s in slices))
        return fake_execute(slices)

    async def scenario() -> None:
        broker = inprocess()
        worker = Worker(broker, execute, max_batch_size=8, max_wait_ms=20)
        count, total = sample("paella_batch_size_count"), sample("paella_batch_size_sum")
        one = sample("paella_batch_size_bucket", {"le": "1.0"})
        images = sample("paella_images_generated_total")

        async def body() -> None:
            jobs = [fake_job([i, 100 + i], f"k{i % 2}") for i in range(32)]
            answers = await asyncio.gather(*(broker.submit(j) for j in jobs))
            for j, answer in zip(jobs, answers, strict=True):
                assert answer == [fake_png(j, s) for s in j.seeds]

        await with_worker(broker, worker, body)
        assert sum(batches) == 64 and max(batches) == 8
        assert sample("paella_batch_size_count") - count == len(batches)
        assert sample("paella_batch_size_sum") - total == 64
        assert sample("paella_batch_size_bucket", {"le": "1.0"}) - one < len(batches)
        assert sample("paella_images_generated_total") - images == 64
        assert await broker.depth() == 0

    asyncio.run(scenario())


def test_a_poisonous_job_fails_alone_and_its_batch_mates_are_answered() -> None:
    batches: list[list[str]] = []

    def execute(slices: list[Slice]) -> list[Made]:
        batches.append([str(s.job.seeds[0]) for s in slices])
        if any(s.job.seeds[0] == 13 for s in slices):
            raise RuntimeError("boom")
        return fake_execute(slices)

    async def scenario() -> None:
        broker = inprocess()
        worker = Worker(broker, execute, max_batch_size=8, max_wait_ms=50)

        async def body() -> None:
            jobs = [fake_job([12]), fake_job([13, 14]), fake_job([15])]  # one key: one batch
            results = await asyncio.gather(*(broker.submit(j) for j in jobs), return_exceptions=True)
            assert results[0] == [fake_png(jobs[0], 12)] and results[2] == [fake_png(jobs[2], 15)]
            assert isinstance(results[1], ServiceError)
            assert (results[1].status, results[1].code) == (500, "generation_failed")

        await with_worker(broker, worker, body)
        assert batches == [["12", "13", "15"], ["12"], ["13"], ["15"]]  # together, then one by one
        assert len(worker.batcher) == 0 and await broker.depth() == 0

    asyncio.run(scenario())


def test_a_hung_executor_is_abandoned_and_the_worker_stops_being_alive() -> None:
    release = threading.Event()

    def execute(slices: list[Slice]) -> list[Made]:
        release.wait(10)
        return fake_execute(slices)

    async def scenario() -> None:
        broker = inprocess()
        worker = Worker(broker, execute, max_batch_size=4, max_wait_ms=0, hang_timeout_s=0.3)
        task = asyncio.create_task(worker.run())
        await worker.ready.wait()
        assert worker.alive
        with pytest.raises(ServiceError) as info:
            await asyncio.wait_for(broker.submit(fake_job([1])), timeout=5)
        assert (info.value.status, info.value.code) == (503, "worker_unavailable")  # not a 504 much later
        await asyncio.wait_for(task, timeout=5)  # the loop stopped without waiting for the stuck thread
        assert worker.hung and not worker.alive
        release.set()

    asyncio.run(scenario())


def test_expired_work_is_answered_504_without_reaching_the_executor() -> None:
    seen: list[str] = []

    def execute(slices: list[Slice]) -> list[Made]:
        seen.extend(s.job.id for s in slices)
        return fake_execute(slices)

    async def scenario() -> None:
        broker = inprocess()
        worker = Worker(broker, execute, max_batch_size=4, max_wait_ms=0)
        expired = fake_job([1], timeout_s=-1)  # already past its deadline
        with pytest.raises(DeadlineExceeded):
            await broker.submit(expired)

        async def body() -> None:
            j = fake_job([2])
            assert await broker.submit(j) == [fake_png(j, 2)]

        await with_worker(broker, worker, body)
        assert expired.id not in seen
        assert await broker.depth() == 0

    asyncio.run(scenario())


def test_warmup_runs_before_ready_and_stop_finishes_the_batch_in_hand() -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def warmup() -> None:
        calls.append("warmup")

    def execute(slices: list[Slice]) -> list[Made]:
        calls.append(f"batch {[(s.start, s.stop) for s in slices]}")
        started.set()
        release.wait(5)
        return fake_execute(slices)

    async def scenario() -> None:
        broker = inprocess()
        worker = Worker(broker, execute, max_batch_size=1, max_wait_ms=0, warmup=warmup)
        before = sample("paella_worker_up")
        task = asyncio.create_task(worker.run())
        await worker.ready.wait()
        assert calls == ["warmup"] and sample("paella_worker_up") == before + 1
        split = asyncio.create_task(broker.submit(fake_job([1, 2])))
        await asyncio.to_thread(started.wait, 5)
        queued = asyncio.create_task(broker.submit(fake_job([3])))
        await asyncio.sleep(0)
        worker.stop()
        release.set()
        await task
        assert calls == ["warmup", "batch [(0, 1)]"]  # the batch in hand finished, nothing after it
        assert not worker.ready.is_set() and sample("paella_worker_up") == before
        with pytest.raises(ServiceError) as info:
            await split  # its second image was given back unstarted
        assert info.value.code == "shutting_down"
        await broker.close()  # the lifespan closes the broker after the worker: the queued job is answered
        with pytest.raises(ServiceError) as info:
            await queued
        assert (info.value.status, info.value.code) == (503, "shutting_down")

    asyncio.run(scenario())


def test_pictures_are_encoded_in_the_pool_while_the_gpu_runs_the_next_batch() -> None:
    events: list[str] = []
    encoded = threading.Event()

    def execute(slices: list[Slice]) -> list[Made]:
        events.append(f"gpu {slices[0].job.seeds[0]}")
        return [Made([f"{s.job.seeds[0]}:{seed}" for seed in s.seeds], [[] for _ in s.seeds]) for s in slices]

    def encode(picture: str, encoding: Encoding) -> bytes:
        if picture.startswith("1:"):
            encoded.wait(5)  # the first batch's encoding waits for the second batch's GPU stage
        events.append(f"encoded {picture}")
        if picture.startswith("2:"):
            encoded.set()
        return picture.encode()

    async def scenario() -> None:
        broker = inprocess()
        worker = Worker(broker, execute, max_batch_size=1, max_wait_ms=0, encode=encode, encoders=2)

        async def body() -> None:
            first = asyncio.create_task(broker.submit(fake_job([1])))
            await asyncio.sleep(0.05)
            second = asyncio.create_task(broker.submit(fake_job([2])))
            assert await first == [b"1:1"] and await second == [b"2:2"]

        await with_worker(broker, worker, body)
        assert events.index("gpu 2") < events.index("encoded 1:1")

    asyncio.run(scenario())


def test_a_failed_encoding_fails_its_jobs_with_500() -> None:
    def encode(picture: bytes, encoding: Encoding) -> bytes:
        raise OSError("disk full")

    async def scenario() -> None:
        broker = inprocess()
        worker = Worker(broker, fake_execute, max_batch_size=4, max_wait_ms=0, encode=encode)

        async def body() -> None:
            with pytest.raises(ServiceError) as info:
                await broker.submit(fake_job([1, 2]))
            assert (info.value.status, info.value.code) == (500, "generation_failed")

        await with_worker(broker, worker, body)
        assert await broker.depth() == 0

    asyncio.run(scenario())


class TwoHalves:
    """An overlapping executor: `launch` notes the batch, `collect` makes it; both log their order. A batch
    holding seed 13 fails when collected."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, slices: list[Slice]) -> list[Made]:
        return self.collect(slices, self.launch(slices))

    def launch(self, slices: list[Slice]) -> int:
        with self.lock:
            self.log.append(f"launch {len(self.log)}")
            return len(self.log) - 1

    def collect(self, slices: list[Slice], launched: int) -> list[Made]:
        time.sleep(0.02)  # the device's time
        with self.lock:
            self.log.append(f"collect {launched}")
        if any(13 in s.seeds for s in slices):
            raise RuntimeError("boom")
        return fake_execute(slices)


def test_an_overlapping_executor_launches_the_next_batch_before_collecting_the_last() -> None:
    execute = TwoHalves()

    async def scenario() -> None:
        broker = inprocess()
        worker = Worker(broker, execute, max_batch_size=2, max_wait_ms=1)

        async def body() -> None:
            jobs = [fake_job([i]) for i in range(12)]
            answers = await asyncio.gather(*(broker.submit(j) for j in jobs))
            assert answers == [[fake_png(j, j.seeds[0])] for j in jobs]

        await with_worker(broker, worker, body)

    asyncio.run(scenario())
    launches = [i for i, line in enumerate(execute.log) if line.startswith("launch")]
    collects = {int(line.split()[1]): i for i, line in enumerate(execute.log) if line.startswith("collect")}
    assert len(launches) == len(collects) >= 6
    # some batch was launched while the one before it was still in flight (not yet collected)
    assert any(collects[earlier] > later for earlier, later in itertools.pairwise(launches))
    # never more than two in flight
    for i in range(len(execute.log)):
        in_flight = sum(1 for j in launches if j <= i and collects[j] > i)
        assert in_flight <= 2, execute.log


def test_an_overlapping_batch_that_fails_is_retried_job_by_job() -> None:
    execute = TwoHalves()

    async def scenario() -> None:
        broker = inprocess()
        worker = Worker(broker, execute, max_batch_size=4, max_wait_ms=30)

        async def body() -> None:
            jobs = [fake_job([12]), fake_job([13]), fake_job([14])]
            results = await asyncio.gather(*(broker.submit(j) for j in jobs), return_exceptions=True)
            assert results[0] == [fake_png(jobs[0], 12)] and results[2] == [fake_png(jobs[2], 14)]
            assert isinstance(results[1], ServiceError) and results[1].code == "generation_failed"

        await with_worker(broker, worker, body)

    asyncio.run(scenario())


def test_with_one_batch_in_flight_each_batch_is_collected_before_the_next_launches() -> None:
    execute = TwoHalves()

    async def scenario() -> None:
        broker = inprocess()
        worker = Worker(broker, execute, max_batch_size=2, max_wait_ms=1, in_flight=1)

        async def body() -> None:
            jobs = [fake_job([i]) for i in range(8)]
            answers = await asyncio.gather(*(broker.submit(j) for j in jobs))
            assert answers == [[fake_png(j, j.seeds[0])] for j in jobs]

        await with_worker(broker, worker, body)

    asyncio.run(scenario())
    assert len(execute.log) >= 8
    kinds = [line.split()[0] for line in execute.log]
    assert kinds == ["launch", "collect"] * (len(kinds) // 2), execute.log
