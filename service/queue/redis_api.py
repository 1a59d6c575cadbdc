"""The HTTP side of the Redis broker: admission by cost against the workers' measured rate, and one
listener per process that hands each waiting request its previews and images."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from model.config import ModelConfig
from service import metrics
from service.errors import DeadlineExceeded, ServiceError, shutting_down
from service.queue.admission import cost
from service.queue.broker import Event, Preview, Result
from service.queue.codec import encode_job
from service.queue.jobs import Job
from service.queue.redis_base import MAX_BLOCK_S, UNAVAILABLE, RedisBase, milli, unavailable
from service.queue.redis_scripts import ADMIT

log = logging.getLogger(__name__)

LOST_CHECK_S = 1.0  # how often the listener checks that the jobs it waits for are still known to Redis
RATE_CACHE_S = 0.5  # how long the workers' measured rate is reused between admissions


def queue_lost() -> ServiceError:
    """503 `queue_lost`: Redis lost the job (restarted without its data); sending it again is safe."""
    return ServiceError(
        503,
        "queue_lost",
        "the queue restarted and lost this request before it was answered; send it again",
        headers={"Retry-After": "1"},
    )


@dataclasses.dataclass
class _Waiting:
    job: Job
    events: asyncio.Queue[Event | ServiceError] = dataclasses.field(default_factory=asyncio.Queue)
    admitted: bool = False  # its marker is written: from now on a missing marker means Redis lost it


class RedisApi(RedisBase):
    """Admits jobs (the `ADMIT` script: cost queued + the job's cost within what the workers' measured
    rate finishes in `max_queue_wait_s`), and waits for their answers on this process's reply list.

    Every job names the reply list (`reply_to`) its worker pushes messages to; one task per process
    BLPOPs it and routes each message to its request, so a thousand waiting requests hold one
    connection. The same task checks every second that each waiting job is still known to Redis (its
    marker key): a job Redis lost in a restart is answered 503 `queue_lost` at once. A request that ends
    unanswered (deadline, client gone) marks its job cancelled, and workers drop it unseen.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._admit = self.redis.register_script(ADMIT)
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self._waiting: dict[str, _Waiting] = {}
        self._rate: tuple[float, float | None] = (-float("inf"), None)
        self._tasks: set[asyncio.Task[None]] = set()

    async def enqueue(self, job: Job) -> AsyncIterator[Event]:
        """Admit `job` (413 if it costs more than the queue ever holds, `QueueFull` if it does not fit now,
        503 `queue_unavailable` if Redis is down) and return its events."""
        units = cost(job)
        self.admission.check_size(units)
        try:
            await self.sync_clock()
            rate = await self._measured_rate(job.model)
            self._listen()
            remaining = job.deadline - time.time()
            queued = dataclasses.replace(
                job,
                created=self.clock(),
                deadline=self.clock() + remaining,
                reply_to=self.reply_key(self.consumer),
            )
            waiting = self._waiting[job.id] = _Waiting(job)  # before admission: answers may come at once
            keys = [
                self.stream_key(job.model),
                self.depth_key(job.model),
                self.cost_key(job.model),
                self.queues_key,
                self.job_key(job.id),
            ]
            allowed = self.admission.allowed(rate)
            ttl_ms = int((remaining + self.result_ttl_s) * 1000)
            args: list[Any] = [job.n, milli(units), milli(allowed), encode_job(queued), job.model, ttl_ms]
            entry, before = await self._admit(keys=keys, args=args)
        except UNAVAILABLE:
            self._waiting.pop(job.id, None)
            raise unavailable(self.admission.retry_after_s) from None
        if not entry:
            self._waiting.pop(job.id, None)
            raise self.admission.refusal(int(before) / 1000, units, rate)
        waiting.admitted = True
        return self._answer(waiting, job.deadline)

    async def _answer(self, waiting: _Waiting, deadline: float) -> AsyncIterator[Event]:
        """The job's previews and images as the listener routes them, until all `n` images are in, an error
        comes or `deadline` (this host's clock) passes; unanswered, the job is cancelled."""
        job, done = waiting.job, set[int]()
        try:
            while len(done) < job.n:
                try:
                    event = await asyncio.wait_for(waiting.events.get(), max(0.0, deadline - time.time()))
                except TimeoutError:
                    raise DeadlineExceeded() from None
                if isinstance(event, ServiceError):
                    raise event
                if isinstance(event, Result):
                    if event.index in done:
                        continue
                    done.add(event.index)
                yield event
        finally:
            self._waiting.pop(job.id, None)
            if len(done) < job.n:
                self._spawn(self._cancel(job.id))

    async def _cancel(self, job_id: str) -> None:
        """Mark the job cancelled: a worker drops it before computing it (best effort)."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(self.done_key(job_id), "cancelled", "1")
                pipe.expire(self.done_key(job_id), self.result_ttl_s)
                await pipe.execute()
        except UNAVAILABLE:
            pass

    def _listen(self) -> None:
        if self._listener is None or self._listener.done():
            self._listening = True
            self._listener = asyncio.create_task(self._listen_loop(), name="paella-redis-replies")

    async def _listen_loop(self) -> None:
        """Route this process's replies; check for lost jobs; ride out Redis outages with backoff."""
        key, checked, backoff = self.reply_key(self.consumer), time.monotonic(), 0.05
        while self._listening:
            try:
                if time.monotonic() - checked >= LOST_CHECK_S:
                    checked = time.monotonic()
                    await self._check_lost()
                popped: Any = await self.redis.blpop([key], timeout=MAX_BLOCK_S)
                if popped is not None and self._listening:
                    more: Any = await self.redis.lpop(key, 255) or []
                    for message in [popped[1], *more]:
                        self._route(message)
                backoff = 0.05
            except UNAVAILABLE as e:
                log.warning("the reply listener lost Redis (%s); reconnecting", type(e).__name__)
                checked = -float("inf")  # check for lost jobs as soon as Redis answers again
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2)
            except Exception:
                log.exception("the reply listener failed; restarting it")
                await asyncio.sleep(0.1)

    def _route(self, raw: bytes) -> None:
        message = json.loads(raw)
        waiting = self._waiting.get(message.get("job", ""))
        if waiting is None:  # answered, timed out or gone already
            return
        if "error" in message:
            waiting.events.put_nowait(ServiceError.from_dict(message["error"]))
            return
        data = base64.b64decode(message["data"])
        if "preview" in message:
            waiting.events.put_nowait(Preview(message["i"], message["preview"], data))
        else:
            waiting.events.put_nowait(Result(message["i"], data))

    async def _check_lost(self) -> None:
        """Answer 503 `queue_lost` every admitted waiting job whose marker Redis no longer has. A job still
        in admission has none yet: it waits in `_waiting` before its marker is written, so that no answer
        comes before it is listened for."""
        ids = [job_id for job_id, waiting in self._waiting.items() if waiting.admitted]
        if not ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(self.job_key(job_id))
            known = await pipe.execute()
        for job_id, exists in zip(ids, known, strict=True):
            waiting = self._waiting.get(job_id)
            if not exists and waiting is not None:
                log.warning("job %s was lost by the queue", job_id)
                waiting.events.put_nowait(queue_lost())

    async def _measured_rate(self, model: str) -> float | None:
        """Cost units a second that the model's live workers finish, summed; None before any measure."""
        at, rate = self._rate
        if time.monotonic() - at < RATE_CACHE_S:
            return rate
        fields: Any = await self.redis.hgetall(self.rate_key(model))
        fresh = self.clock() - self.liveness_s
        rates = [float(r) for r, t in (v.decode().split() for v in fields.values()) if float(t) >= fresh]
        rate = sum(rates) if rates else None
        self._rate = (time.monotonic(), rate)
        return rate

    async def models(self) -> list[ModelConfig]:
        """The models whose workers heartbeated within `liveness_s`, by name."""
        try:
            names: Any = await self.redis.zrangebyscore(
                self.models_key, self.clock() - self.liveness_s, "+inf"
            )
            configs = await self.redis.mget([self.model_key(n.decode()) for n in names]) if names else []
        except UNAVAILABLE:
            raise unavailable(self.admission.retry_after_s) from None
        found = [ModelConfig.from_dict(json.loads(c)) for c in configs if c is not None]
        return sorted(found, key=lambda m: m.name)

    async def depth(self) -> int:
        """Images admitted and not yet answered, over every model's queue."""
        members: Any = await self.redis.smembers(self.queues_key)
        models = sorted(m.decode() for m in members)
        depths = await self.redis.mget([self.depth_key(m) for m in models]) if models else []
        depth = sum(int(d or 0) for d in depths)
        metrics.QUEUE_DEPTH.set(depth)
        return depth

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop_listening(self) -> None:
        """Stop the listener and answer every waiting request 503 `shutting_down`."""
        for waiting in self._waiting.values():
            waiting.events.put_nowait(shutting_down())
        if self._listener is not None:
            # not Task.cancel: redis-py can swallow a cancellation inside a blocking command; a message to
            # our own list wakes the BLPOP instead, and the loop sees it should stop
            self._listening = False
            try:
                await self.redis.rpush(self.reply_key(self.consumer), "{}")
                await asyncio.wait_for(asyncio.shield(self._listener), MAX_BLOCK_S * 2)
                await self.redis.delete(self.reply_key(self.consumer))
            except (*UNAVAILABLE, TimeoutError):
                self._listener.cancel()
            self._listener = None
        await asyncio.gather(*self._tasks, return_exceptions=True)
