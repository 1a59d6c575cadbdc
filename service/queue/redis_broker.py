"""The Redis Streams broker: any number of API processes and GPU workers sharing one Redis.

Keys, all under `prefix`; each model has its own queue, which only its workers read:
    {prefix}:jobs:{model}  stream of admitted jobs (field `job`, see `service.queue.codec`), group `group`
    {prefix}:depth:{model} images of that stream's entries not yet acknowledged (admission)
    {prefix}:dead:{model}  dead-letter stream: entries delivered `max_deliveries` times without finishing
    {prefix}:queues        set of the models that have a queue (their depths add up to `paella_queue_depth`)
    {prefix}:result:{id}   list the worker RPUSHes one message per preview, per stored image (or one error)
                           to, and the API BLPOPs from: `{"i": index, "preview": number, "data": base64}`,
                           `{"i": index, "data": base64}` or `{"error": {...}}`
    {prefix}:done:{id}     hash of the image indices (and `error`) already pushed: makes storing idempotent
    {prefix}:models        sorted set of served models (name -> time of a worker's last heartbeat); models
                           silent for `3 * heartbeat_interval_s` are dropped, and `paella api` is ready
                           while one is listed
    {prefix}:model:{name}  the model's `ModelConfig` as JSON, published by its workers with each heartbeat;
                           expires with the listing

An entry is acknowledged (XACK) and deleted (XDEL) by the same Lua script that stores its job's last
image or its error, so depth (`{prefix}:depth`, kept in step by the scripts) counts exactly the
images of unacknowledged entries, and a worker killed at any point leaves its entries pending. They
are reclaimed with XAUTOCLAIM after `claim_idle_ms`; a live worker keeps its own entries fresh by
re-claiming them (XCLAIM JUSTID) every `claim_idle_ms / 3`. A reclaimed job resumes after the images
already stored, and each image index is pushed at most once however many workers compute it.
"""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from model.config import ModelConfig
from service import metrics
from service.errors import DeadlineExceeded, QueueFull, ServiceError
from service.queue.broker import Delivery, Event, Preview, Result, collect
from service.queue.codec import decode_job, encode_job
from service.queue.jobs import Job, Slice
from service.queue.redis_scripts import ADMIT, FAIL, STORE

if TYPE_CHECKING:
    from service.settings import Settings

# Longest one blocking command (BLPOP, XREADGROUP BLOCK) blocks the server side: waits longer than
# this loop, staying under redis-py's default 5 s socket timeout.
MAX_BLOCK_S = 1.0


class RedisBroker:
    """Both sides of the queue on Redis Streams with a consumer group, one stream per model.

    The API side (`enqueue`) admits a job atomically against `max_queue_depth` images of its model's
    queue, XADDs it and BLPOPs its result list for previews and images until all `n` images are in or the
    deadline passes (no polling). The worker side reads its model's stream with XREADGROUP, reclaims
    stale entries with XAUTOCLAIM, and dead-letters an entry (answering its request 500 `worker_failed`)
    once it would be delivered more than `max_deliveries` times.

    Args:
        redis: a Redis URL (the broker then owns its connection pool and `close()` releases it) or
            a `redis.asyncio.Redis` built with `decode_responses=False` (left open by `close()`).
        prefix: prefix of every key (see the module docstring).
        model: the worker side's model: the queue it takes jobs from (None on the API side).
        group: consumer group of the workers.
        consumer: this worker's name in the group; default `host-pid-random`.
        max_queue_depth: images of a model's unacknowledged entries above which `enqueue` raises
            `QueueFull`.
        retry_after_s: the `Retry-After` that `QueueFull` carries.
        claim_idle_ms: pending entries idle this long are reclaimed from their (dead) worker.
        max_deliveries: deliveries after which an unfinished entry goes to `{prefix}:dead:{model}`.
        result_ttl_s: lifetime of result lists and of the idempotency record.
    """

    def __init__(
        self,
        redis: str | Redis,
        *,
        prefix: str = "paella",
        model: str | None = None,
        group: str = "workers",
        consumer: str | None = None,
        max_queue_depth: int = 256,
        retry_after_s: float = 1.0,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 3,
        result_ttl_s: int = 300,
    ) -> None:
        self._owned = isinstance(redis, str)
        self.redis: Redis = Redis.from_url(redis) if isinstance(redis, str) else redis
        self.prefix = prefix
        self.model = model
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.max_queue_depth = max_queue_depth
        self.retry_after_s = retry_after_s
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.result_ttl_s = result_ttl_s
        self._admit = self.redis.register_script(ADMIT)
        self._store = self.redis.register_script(STORE)
        self._fail = self.redis.register_script(FAIL)
        self._held: dict[str, str] = {}  # job id -> entry id, for jobs this worker received
        self._served: str | None = None  # the announced model's config, as JSON
        self._group_ready = False
        self._claim_cursor = "0-0"
        self._next_claim = 0.0

    @classmethod
    def from_settings(
        cls, settings: Settings, *, model: str | None = None, consumer: str | None = None
    ) -> RedisBroker:
        """A broker on `settings.redis_url` with the settings' queue knobs."""
        if settings.redis_url is None:
            raise ValueError("redis_url is not set")
        return cls(
            settings.redis_url,
            prefix=settings.redis_stream_prefix,
            model=model,
            consumer=consumer,
            max_queue_depth=settings.max_queue_depth,
            retry_after_s=settings.retry_after_s,
            claim_idle_ms=settings.claim_idle_ms,
            max_deliveries=settings.max_deliveries,
            result_ttl_s=settings.result_ttl_s,
        )

    def stream_key(self, model: str) -> str:
        return f"{self.prefix}:jobs:{model}"

    def depth_key(self, model: str) -> str:
        return f"{self.prefix}:depth:{model}"

    def dead_key(self, model: str) -> str:
        return f"{self.prefix}:dead:{model}"

    @property
    def queues_key(self) -> str:
        return f"{self.prefix}:queues"

    @property
    def models_key(self) -> str:
        return f"{self.prefix}:models"

    def model_key(self, name: str) -> str:
        return f"{self.prefix}:model:{name}"

    def result_key(self, job_id: str) -> str:
        return f"{self.prefix}:result:{job_id}"

    def done_key(self, job_id: str) -> str:
        return f"{self.prefix}:done:{job_id}"

    @property
    def stream(self) -> str:
        """The worker side's stream."""
        if self.model is None:
            raise ValueError("the worker side needs the model it serves")
        return self.stream_key(self.model)

    @property
    def liveness_s(self) -> float:
        """How long a model stays listed after its workers' last heartbeat."""
        return 3 * self.heartbeat_interval_s

    # The API's side.

    async def enqueue(self, job: Job) -> AsyncIterator[Event]:
        """Admit and XADD `job`, atomically against `max_queue_depth`; `QueueFull` if it does not fit."""
        keys = [self.stream_key(job.model), self.depth_key(job.model), self.queues_key]
        entry, _depth = await self._admit(
            keys=keys, args=[job.n, self.max_queue_depth, encode_job(job), job.model]
        )
        if not entry:
            raise QueueFull(self.retry_after_s)
        return self._answer(job)

    async def submit(self, job: Job) -> list[bytes]:
        return await collect(self, job)

    async def _answer(self, job: Job) -> AsyncIterator[Event]:
        """BLPOP the job's results until all `n` images are in, an error comes, or the deadline passes."""
        done: set[int] = set()
        while len(done) < job.n:
            remaining = job.deadline - time.time()
            if remaining <= 0:
                raise DeadlineExceeded()
            popped = await self.redis.blpop(
                [self.result_key(job.id)], timeout=min(max(remaining, 0.01), MAX_BLOCK_S)
            )
            if popped is None:
                continue
            message = json.loads(popped[1])
            if "error" in message:
                raise ServiceError.from_dict(message["error"])
            index, data = message["i"], base64.b64decode(message["data"])
            if index in done:
                continue
            if "preview" in message:
                yield Preview(index, message["preview"], data)
            else:
                done.add(index)
                yield Result(index, data)

    async def models(self) -> list[ModelConfig]:
        """The models whose workers heartbeated within `liveness_s`, by name."""
        names: Any = await self.redis.zrangebyscore(self.models_key, time.time() - self.liveness_s, "+inf")
        if not names:
            return []
        configs = await self.redis.mget([self.model_key(n.decode()) for n in names])
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

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def close(self) -> None:
        if self._owned:
            await self.redis.aclose()

    # The worker's side.

    @property
    def heartbeat_interval_s(self) -> float:
        return self.claim_idle_ms / 3000.0

    async def announce(self, model: ModelConfig) -> None:
        """Publish the model this worker serves; `heartbeat` keeps it listed."""
        if model.name != self.model:
            raise ValueError(f"this worker takes jobs for {self.model!r}, not {model.name!r}")
        self._served = json.dumps(model.to_dict(), separators=(",", ":"))
        await self.heartbeat()

    async def receive(self, max_jobs: int, timeout_s: float) -> list[Delivery]:
        await self._ensure_group()
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + self.claim_idle_ms / 2000.0
            reclaimed = await self._reclaim(max_jobs)
            if reclaimed:
                return reclaimed
        block_ms = int(min(timeout_s, self.heartbeat_interval_s, MAX_BLOCK_S) * 1000)
        try:
            read: Any = await self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=max_jobs, block=block_ms or None
            )
        except ResponseError as e:
            if "NOGROUP" in str(e):  # the stream was deleted under us: recreate the group next time
                self._group_ready = False
                return []
            raise
        deliveries = []
        for _stream, entries in read or []:
            for entry_id, fields in entries:
                job = decode_job(fields[b"job"])
                self._held[job.id] = entry_id.decode()
                deliveries.append(Delivery(job, 0))
        return deliveries

    async def _reclaim(self, max_jobs: int) -> list[Delivery]:
        """Take over entries idle past `claim_idle_ms`; dead-letter those delivered too often."""
        claimed: Any = await self.redis.xautoclaim(
            self.stream, self.group, self.consumer, self.claim_idle_ms, self._claim_cursor, count=max_jobs
        )
        cursor, entries = claimed[0], claimed[1]
        self._claim_cursor = cursor.decode()
        deliveries = []
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            if fields is None or entry_id in self._held.values():
                continue
            pending: Any = await self.redis.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
            if not pending:  # acknowledged meanwhile
                continue
            job = decode_job(fields[b"job"])
            self._held[job.id] = entry_id
            if pending[0]["times_delivered"] > self.max_deliveries:
                metrics.DEAD_LETTERS.inc()
                await self._finish_failed(
                    job,
                    ServiceError(500, "worker_failed", f"the job failed on {self.max_deliveries} workers"),
                    dead=True,
                )
                continue
            metrics.REDELIVERIES.inc()
            done = await self.redis.hkeys(self.done_key(job.id))
            if b"error" in done:  # answered already; the worker that answered died before acking
                await self._finish_failed(job, ServiceError(500, "worker_failed", "already failed"))
                continue
            deliveries.append(Delivery(job, len(done)))
        return deliveries

    async def preview(self, part: Slice, previews: list[list[bytes]]) -> None:
        messages = [
            json.dumps({"i": i, "preview": number, "data": base64.b64encode(data).decode()})
            for i, pictures in zip(range(part.start, part.stop), previews, strict=True)
            for number, data in enumerate(pictures)
        ]
        if messages:
            key = self.result_key(part.job.id)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.rpush(key, *messages)
                pipe.expire(key, self.result_ttl_s)
                await pipe.execute()

    async def complete(self, part: Slice, images: list[bytes]) -> None:
        entry_id = self._held[part.job.id]
        args: list[Any] = [self.group, entry_id, part.job.n, self.result_ttl_s]
        for i, data in zip(range(part.start, part.stop), images, strict=True):
            args += [i, json.dumps({"i": i, "data": base64.b64encode(data).decode()})]
        await self._store(keys=self._job_keys(part.job)[:4], args=args)
        if part.stop == part.job.n:
            del self._held[part.job.id]

    async def fail(self, job: Job, error: ServiceError) -> None:
        await self._finish_failed(job, error)

    async def _finish_failed(self, job: Job, error: ServiceError, *, dead: bool = False) -> None:
        entry_id = self._held.pop(job.id)
        message = json.dumps({"error": error.to_dict()})
        args: list[Any] = [
            self.group,
            entry_id,
            job.n,
            self.result_ttl_s,
            message,
            encode_job(job) if dead else "",
        ]
        await self._fail(keys=self._job_keys(job), args=args)

    async def release(self, jobs: list[Job]) -> None:
        """Mark the jobs' entries idle so another worker reclaims them at once."""
        ids: list[Any] = [self._held.pop(job.id) for job in jobs if job.id in self._held]
        if ids:
            await self.redis.xclaim(
                self.stream, self.group, self.consumer, 0, ids, idle=self.claim_idle_ms, justid=True
            )

    async def wanted(self, batch: list[Slice]) -> list[Slice]:
        return batch

    async def abandon(self, jobs: list[Job]) -> None:
        """Stop holding the jobs' entries: no heartbeat extends them, so another worker reclaims them."""
        for job in jobs:
            self._held.pop(job.id, None)

    async def record(self, units: float, seconds: float) -> None:
        return None  # admission on Redis counts images against max_queue_depth

    async def heartbeat(self) -> None:
        """Keep the announced model listed (dropping models silent too long) and reset the idle time of
        the entries this worker holds."""
        if self._served is not None and self.model is not None:
            now, ttl_ms = time.time(), math.ceil(self.liveness_s * 1000)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(self.model_key(self.model), self._served, px=ttl_ms)
                pipe.zadd(self.models_key, {self.model: now})
                pipe.zremrangebyscore(self.models_key, "-inf", now - self.liveness_s)
                pipe.pexpire(self.models_key, ttl_ms)
                await pipe.execute()
        if self._held:
            await self.redis.xclaim(
                self.stream, self.group, self.consumer, 0, [*self._held.values()], justid=True
            )

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready = True

    def _job_keys(self, job: Job) -> list[str]:
        model = job.model
        return [
            self.stream_key(model),
            self.depth_key(model),
            self.done_key(job.id),
            self.result_key(job.id),
            self.dead_key(model),
        ]
