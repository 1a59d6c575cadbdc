"""The GPU loop: queue -> batcher -> executor -> stored results -> acknowledgement."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from model.config import ModelConfig
from service import metrics
from service.errors import DeadlineExceeded, ServiceError, generation_failed
from service.gpu.batcher import Batcher
from service.gpu.delivery import deliver
from service.gpu.encoding import EncodingPool
from service.gpu.flight import Flight, check_results, unique_jobs
from service.gpu.pace import Pace, Pacer, Timed
from service.queue.admission import cost
from service.queue.broker import WorkQueue
from service.queue.jobs import Encoding, Executor, Made, Overlapping, Slice

log = logging.getLogger(__name__)

QUIET_S = 10.0  # the loop logs a failure again only this long after the last one


class Worker:
    """Pulls jobs from a `WorkQueue`, batches them with a `Batcher` and runs them on one GPU thread.

    `run()` warms up (in the GPU thread), announces `model`, sets `ready`, then loops until `stop()`; a
    stop finishes the batch in hand and gives the rest back with `queue.release`. Expired jobs, and jobs
    nobody waits for any more, are dropped without reaching the executor. A `ServiceError` the executor
    raises fails every job of its batch; any other failure of a batch of several jobs is retried job by
    job, so one poisonous request fails alone (500 `generation_failed`) and the others are answered.

    An `Overlapping` executor keeps two batches in flight: once a batch is launched (its work queued on the
    device), the next due batch is prepared and launched behind it before the first is collected, so the
    host's preparation hides behind the device's work. A batch holding a suspect job (see the queue) is
    never in flight beside another: a job that crashes the process takes no other batch along. With a
    `pace` (and a `Timed` executor) the next batch, unless full, waits until just before the batch in flight
    should end (`service.gpu.pace`).

    With `encode`, a batch's pictures and previews are encoded in a pool of threads while the GPU thread
    runs the next batch (at most `max_encoding` batches behind it); each slice's previews are published,
    then its images stored.

    A batch running past `hang_timeout_s` marks the worker hung: its jobs are abandoned to the queue
    (another worker, or a 503, answers them), the loop stops and `alive` turns False for liveness.

    Args:
        queue: where jobs come from and results go (`InProcessBroker` or `RedisBroker`).
        execute: the executor, `execute(slices) -> what it made of each slice`; runs in a dedicated thread.
        max_batch_size: most images per batch (the `Batcher`'s).
        max_wait_ms: longest the oldest job of a key waits for company (the `Batcher`'s).
        variations_apart: variations batch apart (the `Batcher`'s): where they run on an image denoiser.
        model: what this worker serves, announced to the queue once warm; None announces nothing.
        encode: `encode(picture, encoding)`, a picture as the job's bytes; None when `execute` returns bytes.
        encoders: threads of the encoding pool.
        max_encoding: batches encoding at once before the GPU thread waits for them.
        hang_timeout_s: longest a batch may run before the worker counts as hung; None: no limit.
        warmup: called once in the GPU thread before `ready` is set (e.g. the pipeline's warm-up).
        poll_s: longest the loop waits for work before checking `stop()` again.
        in_flight: batches an `Overlapping` executor may have in flight; 1 where launching a batch computes
            it (a CPU), so that no batch's answers wait for the next batch's computation.
        pace: times the launch of the second batch in flight (`service.gpu.pace`); None launches it when due.
        clock: seconds comparable with `Job.created` and `Job.deadline`; default the queue's clock.
    """

    def __init__(
        self,
        queue: WorkQueue,
        execute: Executor,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        variations_apart: bool = True,
        model: ModelConfig | None = None,
        encode: Callable[[Any, Encoding], bytes] | None = None,
        encoders: int = 4,
        max_encoding: int = 2,
        hang_timeout_s: float | None = None,
        warmup: Callable[[], None] | None = None,
        poll_s: float = 0.25,
        in_flight: int = 2,
        pace: Pace | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.queue = queue
        self.execute = execute
        self.model = model
        self.encode = encode
        self.encoders = encoders
        self.max_encoding = max_encoding
        self.hang_timeout_s = hang_timeout_s
        self.batcher = Batcher(max_batch_size, max_wait_ms, variations_apart=variations_apart)
        self.warmup = warmup
        self.poll_s = poll_s
        self.clock = queue.clock if clock is None else clock
        self.ready = asyncio.Event()
        self.hung = False
        self.failed = False
        self._stopping = False
        self._next_beat = 0.0
        self._pool: EncodingPool | None = None
        self.max_in_flight = max(1, in_flight) if isinstance(execute, Overlapping) else 1
        if pace is not None and not isinstance(execute, Timed):
            raise ValueError("a paced worker needs an executor that reports its device time (Timed)")
        self._pacer = Pacer(pace, execute) if pace is not None and self.max_in_flight > 1 else None
        self._in_flight: deque[Flight] = deque()
        self._alone: set[str] = set()  # suspect jobs: their batches run with nothing else in flight
        self._last_end = 0.0

    @property
    def alive(self) -> bool:
        """False once the worker can no longer serve: its start-up failed or its executor hung."""
        return not (self.hung or self.failed)

    def stop(self) -> None:
        """Ask `run()` to return after the batch in hand."""
        self._stopping = True

    async def run(self) -> None:
        gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paella-gpu")
        self._gpu_thread = gpu
        if self.encode is not None:
            self._pool = EncodingPool(self.encode, threads=self.encoders, max_batches=self.max_encoding)
        try:
            if self.warmup is not None:
                try:
                    await asyncio.get_running_loop().run_in_executor(gpu, self.warmup)
                except Exception:
                    self.failed = True
                    raise
            metrics.install_gpu_memory_gauge()
            if self.model is not None:
                await self.queue.announce(self.model)
            self.ready.set()
            metrics.WORKER_UP.inc()
            try:
                last_logged = -QUIET_S
                while not self._stopping:
                    try:
                        await self._step()
                    except Exception:  # the queue is down, say: keep trying, without flooding the log
                        if time.monotonic() - last_logged >= QUIET_S:
                            last_logged = time.monotonic()
                            log.exception("worker step failed; retrying")
                        await asyncio.sleep(self.poll_s)
            finally:
                self.ready.clear()
                metrics.WORKER_UP.dec()
                while self._in_flight and not self.hung:
                    await self._finish(self._in_flight.popleft())
                if self._pool is not None:
                    await self._pool.drain()
                leftover = self.batcher.drain()
                if leftover:
                    await self.queue.release(leftover)
        finally:
            if self._pool is not None:
                self._pool.shutdown()
            gpu.shutdown(wait=not self.hung)  # a hung GPU thread is left behind; the process should restart

    async def _step(self) -> None:
        await self._heartbeat(force=False)
        if len(self._in_flight) >= self.max_in_flight or self._alone_in_flight():
            await self._finish(self._in_flight.popleft())
            return
        now = self.clock()
        for job in self.batcher.expire(now):
            self._alone.discard(job.id)
            await self.queue.fail(job, DeadlineExceeded())
        hold = self._hold()
        if hold is not None:  # a timed launch: take in arrivals until just before the device is free
            await self._receive(hold)
            return
        batch = self.batcher.next_batch(now)
        if batch:
            wanted = await self.queue.wanted(batch)  # nobody waits for the rest: never computed
            for part in batch:
                if part not in wanted:
                    self.batcher.discard(part.job.id)
            if wanted:
                if self._in_flight and any(p.job.id in self._alone for p in wanted):
                    while self._in_flight:  # a suspect's batch starts with nothing else in flight
                        await self._finish(self._in_flight.popleft())
                await self._launch(wanted)
            return
        if self._in_flight:
            if len(self._in_flight) < self.max_in_flight and await self._more_due():
                return  # launch it behind the one in flight before waiting for that one
            await self._finish(self._in_flight.popleft())
            return
        wakeup = self.batcher.next_wakeup(now)
        timeout = self.poll_s if wakeup is None else min(self.poll_s, max(0.0, wakeup - now))
        if self.queue.heartbeat_interval_s is not None:
            timeout = min(timeout, self.queue.heartbeat_interval_s)
        await self._receive(timeout)

    async def _receive(self, timeout: float) -> None:
        room = max(1, self.batcher.max_batch_size - self.batcher.pending_images)
        for delivery in await self.queue.receive(room, timeout):
            if delivery.suspect:
                self._alone.add(delivery.job.id)
            self.batcher.add(delivery.job, delivery.start, alone=delivery.suspect)

    async def _more_due(self) -> bool:
        """Take what the queue holds, without waiting; whether a batch is due now."""
        await self._receive(0.001)
        now = self.clock()
        wakeup = self.batcher.next_wakeup(now)
        return wakeup is not None and wakeup <= now

    def _hold(self) -> float | None:
        """Seconds to go on forming the next batch before launching it (paced workers); None: when due."""
        pending = self.batcher.pending_images
        if self._pacer is None or not self._in_flight or pending >= self.batcher.max_batch_size:
            return None  # not paced, nothing to launch behind, or full: waiting adds nothing
        wait = None if self._alone_in_flight() else self._pacer.hold(self._in_flight[-1], pending)
        return None if wait is None else min(wait, self.poll_s)

    def _alone_in_flight(self) -> bool:
        return any(p.job.id in self._alone for f in self._in_flight for p in f.batch)

    async def _launch(self, batch: list[Slice]) -> None:
        """Start a batch: queue its work on the device (`Overlapping` executors), or just note it (others
        compute the whole batch when it is finished)."""
        start = self.clock()
        for part in batch:
            metrics.QUEUE_WAIT.observe(max(0.0, start - part.job.created))
        launched: Any = None
        ahead = self._in_flight[-1] if self._in_flight else None
        began = time.monotonic()
        if isinstance(self.execute, Overlapping):
            try:
                launched = await self._gpu(self.execute.launch, batch)
            except _Hung:
                await self._abandon_in_flight(batch)
                return
            except ServiceError as e:
                await self._fail(batch, e)
                return
            except Exception:
                await self._failed(batch)
                return
        launch_s = time.monotonic() - began
        images, ends_at, behind = sum(p.n for p in batch), None, False
        if self._pacer is not None:
            ends_at, behind = self._pacer.launched(launch_s, images, ahead)
        self._in_flight.append(Flight(batch, launched, start, images, ends_at, behind, launch_s))

    async def _finish(self, flight: Flight) -> None:
        """Wait for a launched batch's pictures (computing them, for executors that do not overlap), then
        answer its jobs."""
        batch = flight.batch
        error: ServiceError | None = None
        try:
            if isinstance(self.execute, Overlapping):
                results = await self._gpu(self.execute.collect, batch, flight.launched)
                if self._pacer is not None:
                    self._pacer.collected(flight)
            else:
                results = await self._gpu(self.execute, batch)
            check_results(batch, results)
        except _Hung:
            await self._abandon_in_flight(batch)
            return
        except ServiceError as e:
            error = e
        except Exception:
            await self._failed(batch)
            return
        end = self.clock()
        seconds = max(0.0, end - max(flight.start, self._last_end))  # its own time, not its wait
        self._last_end = end
        metrics.BATCH_COMPUTE.observe(seconds)
        metrics.BATCH_SIZE.observe(sum(p.n for p in batch))
        metrics.refresh_gpu_memory()
        for part in batch:
            self._alone.discard(part.job.id)
        if error is not None:
            await self._fail(batch, error)
            return
        await self.queue.record(sum(cost(p.job) * p.n / p.job.n for p in batch), seconds)
        await self._deliver(batch, results)

    async def _failed(self, batch: list[Slice]) -> None:
        """A batch failed with no `ServiceError`: several jobs are retried one by one, a lone job fails."""
        jobs = unique_jobs(batch)
        if len(jobs) > 1:
            log.exception("a batch of %d jobs failed; retrying them one by one", len(jobs))
            while self._in_flight:  # the retries run with nothing else in flight
                await self._finish(self._in_flight.popleft())
            await self._one_by_one(batch)
            return
        log.exception("a job of %d images failed", sum(p.n for p in batch))
        for job in jobs:
            self._alone.discard(job.id)
        await self._fail(batch, generation_failed())

    async def _abandon_in_flight(self, batch: list[Slice]) -> None:
        """The GPU thread hung: give up `batch` and every batch still in flight."""
        others = [p for f in self._in_flight for p in f.batch]
        self._in_flight.clear()
        await self._abandon(batch + others)

    async def _one_by_one(self, batch: list[Slice]) -> None:
        """Each job of a failed batch alone: the ones that fail again get the error, the others images."""
        for job in unique_jobs(batch):
            own = [p for p in batch if p.job.id == job.id]
            self._alone.discard(job.id)
            try:
                results = await self._gpu(self.execute, own)
                check_results(own, results)
            except _Hung:
                await self._abandon(own)
                return
            except ServiceError as e:
                await self._fail(own, e)
            except Exception:
                log.exception("job %s failed alone", job.id)
                await self._fail(own, generation_failed())
            else:
                await self._deliver(own, results)

    async def _gpu(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in the GPU thread; `_Hung` past `hang_timeout_s`, heartbeats meanwhile."""
        future = asyncio.get_running_loop().run_in_executor(self._gpu_thread, fn, *args)
        started = time.monotonic()
        interval = self.queue.heartbeat_interval_s or self.hang_timeout_s
        while not future.done():
            await asyncio.wait({future}, timeout=interval)
            if future.done():
                break
            if self.hang_timeout_s is not None and time.monotonic() - started > self.hang_timeout_s:
                self.hung = True
                self._stopping = True
                log.error("a batch has run for over %s s: the worker is hung and stops", self.hang_timeout_s)
                raise _Hung
            await self._heartbeat(force=True)  # the queue must not reclaim the batch meanwhile
        return future.result()

    async def _deliver(self, batch: list[Slice], results: list[Made]) -> None:
        if self._pool is None:
            await self._store(batch, results)
        else:
            await self._pool.submit(self._encode_and_store(self._pool, batch, results))

    async def _encode_and_store(self, pool: EncodingPool, batch: list[Slice], results: list[Made]) -> None:
        """Encode a batch's pictures and previews in the pool, all at once, and store each slice as soon as
        its own are done (a slice never waits for the encoding of another)."""

        async def one(part: Slice, made: Made) -> None:
            try:
                encoded = await pool.made(made, part.job.encoding)
            except Exception:
                log.exception("encoding %d images of job %s failed", part.n, part.job.id)
                await self._fail([part], generation_failed())
                return
            await self._store([part], [encoded])

        await asyncio.gather(*(one(part, made) for part, made in zip(batch, results, strict=True)))

    async def _store(self, batch: list[Slice], results: list[Made]) -> None:
        for part, made in zip(batch, results, strict=True):
            if await deliver(self.queue, part, made):
                metrics.IMAGES_GENERATED.inc(len(made.pictures))
            else:
                self.batcher.discard(part.job.id)
                await self.queue.abandon([part.job])

    async def _fail(self, batch: list[Slice], error: ServiceError) -> None:
        for job in unique_jobs(batch):
            self.batcher.discard(job.id)
            await self.queue.fail(job, error)

    async def _abandon(self, batch: list[Slice]) -> None:
        jobs = unique_jobs(batch)
        for job in jobs:
            self.batcher.discard(job.id)
        await self.queue.abandon(jobs)

    async def _heartbeat(self, *, force: bool) -> None:
        interval = self.queue.heartbeat_interval_s
        if interval is None or (not force and time.monotonic() < self._next_beat):
            return
        self._next_beat = time.monotonic() + interval
        try:
            await self.queue.heartbeat()
        except Exception:
            log.exception("heartbeat failed")


class _Hung(Exception):
    """A batch outlived `hang_timeout_s`."""
