"""The service under faults, on a Redis of the test's own and real processes: Redis restarted under load,
Redis refusing writes while results are stored, a hung or stalled worker, a poison request, many waiting
requests, and a killed worker with the default settings. Each answers every request, never with a 500."""

from __future__ import annotations

import asyncio
import base64
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.errors import DeadlineExceeded
from service.gpu.worker import Worker
from service.queue.admission import Admission
from service.queue.jobs import Made, Slice
from service.queue.redis_broker import RedisBroker
from service.settings import Settings
from tests.service.fakes import FAKE_MODEL, fake_execute, fake_job, fake_png
from tests.service.live import LiveServer
from tests.service.private_redis import PrivateRedis
from tests.service.redis_worker_proc import POISON

pytestmark = [pytest.mark.redis, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROC = "tests.service.redis_worker_proc"
PREFIX = "faults"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path) as server:
        yield server


class Workers:
    """`redis_worker_proc` processes, by name; `wait_ready` blocks until each has announced itself."""

    def __init__(self, url: str, delay_s: float, claim_idle_ms: int, max_batch: int = 4) -> None:
        self.url, self.delay_s, self.claim_idle_ms, self.max_batch = url, delay_s, claim_idle_ms, max_batch
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        args = [self.url, PREFIX, name, str(self.delay_s), str(self.claim_idle_ms), str(self.max_batch)]
        self.procs[name] = subprocess.Popen([sys.executable, "-m", PROC, *args], cwd=REPO)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck worker
                proc.kill()


def api_settings(url: str, **kwargs: Any) -> Settings:
    return Settings(
        weights="/nowhere", redis_url=url, redis_stream_prefix=PREFIX, claim_idle_ms=600, **kwargs
    )


def wait_ready(client: Any, names: list[str], timeout_s: float = 60) -> None:
    for _ in names:
        assert client.blpop([f"{PREFIX}:test:ready"], timeout=timeout_s) is not None


def test_redis_restarted_under_load_answers_503_meanwhile_never_500_and_serves_after(
    private_redis: PrivateRedis,
) -> None:
    workers = Workers(private_redis.url, delay_s=0.02, claim_idle_ms=600)
    workers.start("w1")
    app = create_app(api_settings(private_redis.url, request_timeout_s=8), run_worker=False)
    outcomes: list[tuple[float, int, str, str | None]] = []
    try:
        wait_ready(private_redis.client(), ["w1"])
        with LiveServer(app) as server, server.client(timeout_s=30) as http:
            start = time.monotonic()
            stopped_at, restarted_at = 2.0, 3.5

            def send(k: int) -> None:
                sent = time.monotonic() - start
                answer = http.post("/v1/images/generations", json={"prompt": f"a red circle {k}", "seed": k})
                code = answer.json()["error"]["code"] if answer.status_code != 200 else ""
                outcomes.append((sent, answer.status_code, code, answer.headers.get("retry-after")))

            def outage() -> None:
                time.sleep(stopped_at)
                private_redis.stop()
                time.sleep(restarted_at - stopped_at)
                private_redis.start()

            chaos = threading.Thread(target=outage)
            chaos.start()
            with ThreadPoolExecutor(16) as pool:
                for k in range(120):  # 20 requests a second for 6 s
                    time.sleep(max(0.0, start + k / 20 - time.monotonic()))
                    pool.submit(send, k)
            chaos.join()
    finally:
        workers.stop()
    assert len(outcomes) == 120  # every request answered
    statuses = Counter(status for _, status, _, _ in outcomes)
    assert set(statuses) <= {200, 503}, statuses  # never a 500, never a deadline passed
    refused = [(code, retry) for _, status, code, retry in outcomes if status == 503]
    assert refused and all(retry is not None for _, retry in refused)  # each 503 says when to retry
    assert {code for code, _ in refused} <= {"queue_unavailable", "queue_lost", "not_ready"}
    assert all(status == 200 for sent, status, _, _ in outcomes if sent < stopped_at - 0.5)
    assert all(status == 200 for sent, status, _, _ in outcomes if sent > restarted_at + 1.5)


def test_with_an_append_only_redis_accepted_work_survives_a_restart(tmp_path: Path) -> None:
    """The documented alternative to the stack's Redis: a request admitted before a restart (and its
    waiting client) is served after it."""
    with PrivateRedis(tmp_path, append_only=True) as server:

        async def scenario() -> None:
            api = RedisBroker(server.url, prefix=PREFIX)
            j = fake_job([3], timeout_s=20)
            answer = asyncio.create_task(api.submit(j))
            await asyncio.sleep(0.2)  # admitted; no worker yet
            await asyncio.to_thread(server.stop, crash=False)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(server.start)
            await asyncio.sleep(1.5)  # the listener is back and found the job still known
            assert not answer.done()
            queue = RedisBroker(server.url, prefix=PREFIX, model=FAKE_MODEL, consumer="w1")
            worker = Worker(queue, fake_execute, max_batch_size=4, max_wait_ms=0, poll_s=0.05)
            task = asyncio.create_task(worker.run())
            assert await answer == [fake_png(j, 3)]
            worker.stop()
            await task
            await api.close()
            await queue.close()

        asyncio.run(scenario())


def test_redis_refusing_writes_while_results_are_stored_strands_nothing(private_redis: PrivateRedis) -> None:
    """Redis out of memory when a batch's results are stored: the worker retries, gives the job up, and
    it is computed again and answered once Redis takes writes again; the queue's counters do not leak."""
    admin = private_redis.client()
    computed: list[str] = []

    def execute(batch: list[Slice]) -> list[Made]:
        computed.extend(part.job.id for part in batch)
        if len(computed) == 1:
            admin.config_set("maxmemory", 1)  # every write refused from now on
            threading.Timer(3.0, admin.config_set, ("maxmemory", 0)).start()
        return fake_execute(batch)

    async def scenario() -> None:
        api = RedisBroker(private_redis.url, prefix=PREFIX, claim_idle_ms=500)
        queue = RedisBroker(
            private_redis.url, prefix=PREFIX, model=FAKE_MODEL, consumer="w1", claim_idle_ms=500
        )
        worker = Worker(queue, execute, max_batch_size=4, max_wait_ms=0, poll_s=0.05)
        task = asyncio.create_task(worker.run())
        j = fake_job([1, 2], timeout_s=20)
        try:
            assert await api.submit(j) == [fake_png(j, 1), fake_png(j, 2)]
        finally:
            worker.stop()
            await task
        assert computed == [j.id, j.id]  # computed again after its first results could not be stored
        assert await api.depth() == 0 and await api.redis.xlen(queue.stream) == 0
        assert await api.redis.get(api.cost_key(FAKE_MODEL)) == b"0"
        await api.close()
        await queue.close()

    asyncio.run(scenario())


def hanging(release: threading.Event, started: threading.Event | None = None) -> Any:
    def execute(batch: list[Slice]) -> list[Made]:
        if started is not None:
            started.set()
        release.wait(30)
        return fake_execute(batch)

    return execute


def test_a_hung_worker_gives_its_jobs_up_to_a_healthy_one(private_redis: PrivateRedis) -> None:
    release = threading.Event()

    async def scenario() -> None:
        api = RedisBroker(private_redis.url, prefix=PREFIX)
        brokers = [
            RedisBroker(private_redis.url, prefix=PREFIX, model=FAKE_MODEL, consumer=c, claim_idle_ms=400)
            for c in ("hung", "healthy")
        ]
        hung = Worker(
            brokers[0], hanging(release), max_batch_size=4, max_wait_ms=0, poll_s=0.05, hang_timeout_s=0.5
        )
        healthy = Worker(brokers[1], fake_execute, max_batch_size=4, max_wait_ms=0, poll_s=0.05)
        tasks = [asyncio.create_task(hung.run())]
        j = fake_job([1], timeout_s=20)
        answer = asyncio.create_task(api.submit(j))
        while not hung.hung:  # it took the job and passed its hang timeout
            await asyncio.sleep(0.05)
        tasks.append(asyncio.create_task(healthy.run()))
        assert await answer == [fake_png(j, 1)]
        assert not hung.alive and healthy.alive
        release.set()
        healthy.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for broker in (api, *brokers):
            await broker.close()

    asyncio.run(scenario())


def test_a_stalled_worker_cannot_keep_a_job_past_its_deadline(private_redis: PrivateRedis) -> None:
    """A worker that heartbeats but never finishes (no hang limit) renews its lease only until the job's
    deadline: then another worker reclaims the entry and frees the queue, instead of it leaking."""
    release, started = threading.Event(), threading.Event()

    async def scenario() -> None:
        api = RedisBroker(private_redis.url, prefix=PREFIX)
        brokers = [
            RedisBroker(private_redis.url, prefix=PREFIX, model=FAKE_MODEL, consumer=c, claim_idle_ms=400)
            for c in ("stalled", "healthy")
        ]
        stalled = Worker(brokers[0], hanging(release, started), max_batch_size=4, max_wait_ms=0, poll_s=0.05)
        healthy = Worker(brokers[1], fake_execute, max_batch_size=4, max_wait_ms=0, poll_s=0.05)
        tasks = [asyncio.create_task(stalled.run())]
        late = asyncio.create_task(api.submit(fake_job([2], timeout_s=1.5)))
        while not started.is_set():
            await asyncio.sleep(0.02)
        tasks.append(asyncio.create_task(healthy.run()))
        with pytest.raises(DeadlineExceeded):
            await late
        for _ in range(100):  # deadline + lease + the healthy worker's next look
            if await api.depth() == 0:
                break
            await asyncio.sleep(0.05)
        assert await api.depth() == 0 and await api.redis.xlen(brokers[1].stream) == 0
        assert await api.redis.get(api.cost_key(FAKE_MODEL)) == b"0"
        release.set()
        for worker in (stalled, healthy):
            worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for broker in (api, *brokers):
            await broker.close()

    asyncio.run(scenario())


def test_a_poison_request_fails_alone_and_its_batch_mates_are_answered(private_redis: PrivateRedis) -> None:
    workers = Workers(private_redis.url, delay_s=0.1, claim_idle_ms=400, max_batch=8)
    admin = private_redis.client()
    for name in ("w1", "w2"):
        workers.start(name)
    wait_ready(admin, ["w1", "w2"])
    app = create_app(api_settings(private_redis.url, request_timeout_s=40), run_worker=False)
    try:
        with LiveServer(app) as server, server.client(timeout_s=60) as http:
            prompts = ["a red circle"] * 5 + [POISON]

            def send(k: int) -> httpx.Response:
                return http.post("/v1/images/generations", json={"prompt": prompts[k], "seed": k})

            with ThreadPoolExecutor(len(prompts)) as pool:
                futures = [pool.submit(send, k) for k in range(len(prompts))]
                deadline, respawned = time.monotonic() + 60, 0
                while not all(f.done() for f in futures) and time.monotonic() < deadline:
                    for name in [n for n, p in workers.procs.items() if p.poll() is not None]:
                        respawned += 1  # an orchestrator restarts a crashed worker
                        del workers.procs[name]
                        workers.start(f"respawned-{respawned}")
                    time.sleep(0.05)
                results = [f.result() for f in futures]
    finally:
        workers.stop()
    for k, answer in enumerate(results[:5]):
        assert answer.status_code == 200, answer.text
        assert base64.b64decode(answer.json()["data"][0]["b64_json"]) == f"a red circle/{k}".encode()
    assert results[5].status_code == 500 and results[5].json()["error"]["code"] == "worker_failed"
    log = [line.decode().split()[1] for line in admin.lrange(f"{PREFIX}:test:computed", 0, -1)]
    assert len(set(log)) == 5  # each innocent job made (once it ran alone at the latest)
    [(_, dead)] = admin.xrange(f"{PREFIX}:dead:{FAKE_MODEL}")
    assert int(dead[b"deliveries"]) == 4  # max_deliveries (3) crashes, then dead-lettered


def test_300_concurrent_waiting_requests_are_all_answered(private_redis: PrivateRedis) -> None:
    app = create_app(api_settings(private_redis.url, request_timeout_s=60), run_worker=False)
    workers = Workers(private_redis.url, delay_s=0.01, claim_idle_ms=600, max_batch=32)

    async def flood(url: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
            return await asyncio.gather(
                *(
                    http.post("/v1/images/generations", json={"prompt": "a blue square", "seed": k})
                    for k in range(300)
                )
            )

    workers.start("w1")
    try:
        wait_ready(private_redis.client(), ["w1"])
        with LiveServer(app) as server:
            answers = asyncio.run(flood(server.url))
    finally:
        workers.stop()
    assert Counter(a.status_code for a in answers) == {200: 300}
    for k, answer in enumerate(answers):
        assert base64.b64decode(answer.json()["data"][0]["b64_json"]) == f"a blue square/{k}".encode()


def test_a_sigkilled_worker_s_jobs_are_answered_within_their_deadline_with_the_default_lease(
    private_redis: PrivateRedis,
) -> None:
    """With the default lease (`PAELLA_CLAIM_IDLE_MS`), a killed worker's jobs are made by the survivor
    well within a short deadline (12 s; with a 30 s lease they were answered 504)."""
    lease_ms = Settings().claim_idle_ms
    workers = Workers(private_redis.url, delay_s=0.5, claim_idle_ms=lease_ms)
    admin = private_redis.client()
    for name in ("w1", "w2"):
        workers.start(name)
    wait_ready(admin, ["w1", "w2"])

    async def scenario() -> None:
        api = RedisBroker(private_redis.url, prefix=PREFIX, claim_idle_ms=lease_ms)
        jobs = [fake_job([k], "k", timeout_s=12) for k in range(4)]
        answers = asyncio.gather(*(api.submit(j) for j in jobs))
        started = await api.redis.blpop([f"{PREFIX}:test:started"], timeout=30)
        assert started is not None
        workers.procs[started[1].decode()].send_signal(signal.SIGKILL)
        assert await answers == [[fake_png(j, j.seeds[0])] for j in jobs]
        await api.close()

    try:
        asyncio.run(scenario())
    finally:
        workers.stop()


def test_sigterm_to_a_worker_finishes_its_batch_and_gives_the_rest_back(private_redis: PrivateRedis) -> None:
    """A stopping worker finishes the batch in hand, gives back what it had taken (at no delivery's cost:
    nothing is computed twice) and exits 0 well within the compose stop grace period."""
    workers = Workers(private_redis.url, delay_s=0.5, claim_idle_ms=Settings().claim_idle_ms, max_batch=2)
    admin = private_redis.client()
    for name in ("w1", "w2"):
        workers.start(name)
    wait_ready(admin, ["w1", "w2"])

    async def scenario() -> str:
        api = RedisBroker(private_redis.url, prefix=PREFIX)
        jobs = [fake_job([k], "k", timeout_s=30) for k in range(8)]
        answers = asyncio.gather(*(api.submit(j) for j in jobs))
        started = await api.redis.blpop([f"{PREFIX}:test:started"], timeout=30)
        assert started is not None
        stopping = started[1].decode()
        workers.procs[stopping].send_signal(signal.SIGTERM)
        assert await answers == [[fake_png(j, j.seeds[0])] for j in jobs]
        await api.close()
        return stopping

    try:
        stopping = asyncio.run(scenario())
        assert workers.procs[stopping].wait(timeout=10) == 0
    finally:
        workers.stop()
    computed = Counter(
        line.decode().split(" ", 1)[1] for line in admin.lrange(f"{PREFIX}:test:computed", 0, -1)
    )
    assert len(computed) == 8 and set(computed.values()) == {1}  # every image made once
    assert any(line.startswith(stopping.encode()) for line in admin.lrange(f"{PREFIX}:test:computed", 0, -1))


def test_claims_by_images_spread_a_burst_over_both_workers(private_redis: PrivateRedis) -> None:
    """A burst of six 4-image jobs on two workers of batch 8: each takes what fits its batch (two jobs),
    so both are busy while work waits. Claiming a batch size of entries instead, the first worker to
    wake would take all six and leave the other idle."""
    workers = Workers(private_redis.url, delay_s=0.3, claim_idle_ms=Settings().claim_idle_ms, max_batch=8)
    admin = private_redis.client()
    for name in ("w1", "w2"):
        workers.start(name)
    wait_ready(admin, ["w1", "w2"])

    async def scenario() -> None:
        api = RedisBroker(private_redis.url, prefix=PREFIX, admission=Admission(1e6, max_queue_wait_s=600))
        jobs = [fake_job([4 * k + i for i in range(4)], "k", timeout_s=30) for k in range(6)]
        answers = await asyncio.gather(*(api.submit(j) for j in jobs))
        assert answers == [[fake_png(j, s) for s in j.seeds] for j in jobs]
        await api.close()

    try:
        asyncio.run(scenario())
    finally:
        workers.stop()
    made = Counter(line.decode().split()[0] for line in admin.lrange(f"{PREFIX}:test:computed", 0, -1))
    assert sum(made.values()) == 24 and min(made["w1"], made["w2"]) >= 8, made
