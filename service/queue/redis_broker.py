"""The Redis Streams broker: any number of API processes and GPU workers sharing one Redis.

Keys, all under `prefix`:
    {prefix}:jobs          stream of admitted jobs (field `job`, see `service.queue.codec`), group `group`
    {prefix}:depth         images of entries not yet acknowledged (admission and `paella_queue_depth`)
    {prefix}:result:{id}   list the worker RPUSHes one message per stored image (or one error) to,
                           and the API BLPOPs from: `{"i": index, "png": base64}` or `{"error": {...}}`
    {prefix}:done:{id}     hash of the image indices (and `error`) already pushed: makes storing idempotent
    {prefix}:dead          dead-letter stream: entries delivered `max_deliveries` times without finishing
    {prefix}:workers       sorted set of worker heartbeats (consumer -> time): `paella api` is ready while
                           one is recent

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
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from service import metrics
from service.errors import DeadlineExceeded, QueueFull, ServiceError
from service.queue.broker import Delivery
from service.queue.codec import decode_job, encode_job
from service.queue.jobs import Job, Slice

if TYPE_CHECKING:
    from service.settings import Settings

# Longest one blocking command (BLPOP, XREADGROUP BLOCK) blocks the server side: waits longer than
# this loop, staying under redis-py's default 5 s socket timeout.
MAX_BLOCK_S = 1.0

# KEYS: stream, depth. ARGV: n, max depth, job JSON. Returns {entry id or false, depth}.
_ADMIT = """
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('SET', KEYS[2], 0) end
local depth = tonumber(redis.call('GET', KEYS[2]) or '0')
local n = tonumber(ARGV[1])
if depth + n > tonumber(ARGV[2]) then return {false, depth} end
local id = redis.call('XADD', KEYS[1], '*', 'job', ARGV[3])
return {id, redis.call('INCRBY', KEYS[2], n)}
"""

# Acknowledge and delete an entry, and take its images off the depth once.
_ACK = """
local function ack(stream, depth, group, id, n)
  redis.call('XACK', stream, group, id)
  if redis.call('XDEL', stream, id) == 1 then redis.call('DECRBY', depth, n) end
end
"""

# KEYS: stream, depth, done, result. ARGV: group, entry id, n, ttl, then index, message pairs.
# Returns how many images were pushed (those not pushed before).
_STORE = (
    _ACK
    + """
local pushed = 0
if redis.call('HEXISTS', KEYS[3], 'error') == 0 then
  for k = 5, #ARGV, 2 do
    if redis.call('HSETNX', KEYS[3], ARGV[k], '1') == 1 then
      redis.call('RPUSH', KEYS[4], ARGV[k + 1])
      pushed = pushed + 1
    end
  end
end
redis.call('EXPIRE', KEYS[3], ARGV[4])
if pushed > 0 then redis.call('EXPIRE', KEYS[4], ARGV[4]) end
if redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[3]) then ack(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]) end
return pushed
"""
)

# KEYS: stream, depth, done, result, dead. ARGV: group, entry id, n, ttl, error message,
# job JSON for the dead letters ('' for none). Returns 1 if the error was pushed, 0 if already answered.
_FAIL = (
    _ACK
    + """
if ARGV[6] ~= '' then redis.call('XADD', KEYS[5], '*', 'job', ARGV[6], 'entry', ARGV[2], 'error', ARGV[5]) end
local answered = 0
if redis.call('HLEN', KEYS[3]) < tonumber(ARGV[3]) and redis.call('HSETNX', KEYS[3], 'error', '1') == 1 then
  redis.call('RPUSH', KEYS[4], ARGV[5])
  redis.call('EXPIRE', KEYS[4], ARGV[4])
  answered = 1
end
redis.call('EXPIRE', KEYS[3], ARGV[4])
ack(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
return answered
"""
)


class RedisBroker:
    """Both sides of the queue on a Redis Stream with a consumer group.

    The API side (`submit`) admits a job atomically against `max_queue_depth` images, XADDs it and
    BLPOPs its result list until it holds all `n` images or the deadline passes (no polling). The
    worker side reads with XREADGROUP, reclaims stale entries with XAUTOCLAIM, and dead-letters an
    entry (answering its request 500 `worker_failed`) once it would be delivered more than
    `max_deliveries` times.

    Args:
        redis: a Redis URL (the broker then owns its connection pool and `close()` releases it) or
            a `redis.asyncio.Redis` built with `decode_responses=False` (left open by `close()`).
        prefix: prefix of every key (see the module docstring).
        group: consumer group of the workers.
        consumer: this worker's name in the group; default `host-pid-random`.
        max_queue_depth: images of unacknowledged entries above which `submit` raises `QueueFull`.
        retry_after_s: the `Retry-After` that `QueueFull` carries.
        claim_idle_ms: pending entries idle this long are reclaimed from their (dead) worker.
        max_deliveries: deliveries after which an unfinished entry goes to `{prefix}:dead`.
        result_ttl_s: lifetime of result lists and of the idempotency record.
    """

    def __init__(
        self,
        redis: str | Redis,
        *,
        prefix: str = "paella",
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
        self.stream = f"{prefix}:jobs"
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.max_queue_depth = max_queue_depth
        self.retry_after_s = retry_after_s
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.result_ttl_s = result_ttl_s
        self._admit = self.redis.register_script(_ADMIT)
        self._store = self.redis.register_script(_STORE)
        self._fail = self.redis.register_script(_FAIL)
        self._held: dict[str, str] = {}  # job id -> entry id, for jobs this worker received
        self._group_ready = False
        self._claim_cursor = "0-0"
        self._next_claim = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, *, consumer: str | None = None) -> RedisBroker:
        """A broker on `settings.redis_url` with the settings' queue knobs."""
        if settings.redis_url is None:
            raise ValueError("redis_url is not set")
        return cls(
            settings.redis_url,
            prefix=settings.redis_stream_prefix,
            consumer=consumer,
            max_queue_depth=settings.max_queue_depth,
            retry_after_s=settings.retry_after_s,
            claim_idle_ms=settings.claim_idle_ms,
            max_deliveries=settings.max_deliveries,
            result_ttl_s=settings.result_ttl_s,
        )

    @property
    def depth_key(self) -> str:
        return f"{self.prefix}:depth"

    @property
    def dead_key(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def workers_key(self) -> str:
        return f"{self.prefix}:workers"

    def result_key(self, job_id: str) -> str:
        return f"{self.prefix}:result:{job_id}"

    def done_key(self, job_id: str) -> str:
        return f"{self.prefix}:done:{job_id}"

    # The API's side.

    async def submit(self, job: Job) -> list[bytes]:
        await self.enqueue(job)
        return await self.wait(job)

    async def enqueue(self, job: Job) -> None:
        """Admit and XADD `job`, atomically against `max_queue_depth`; `QueueFull` if it does not fit."""
        entry, depth = await self._admit(
            keys=[self.stream, self.depth_key], args=[job.n, self.max_queue_depth, encode_job(job)]
        )
        metrics.QUEUE_DEPTH.set(int(depth))
        if not entry:
            raise QueueFull(self.retry_after_s)

    async def wait(self, job: Job) -> list[bytes]:
        """BLPOP the job's results until all `n` images are in, an error comes, or the deadline passes."""
        images: list[bytes | None] = [None] * job.n
        missing = job.n
        while missing:
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
            if images[message["i"]] is None:
                missing -= 1
            images[message["i"]] = base64.b64decode(message["png"])
        return [png for png in images if png is not None]

    async def depth(self) -> int:
        depth = int(await self.redis.get(self.depth_key) or 0)
        metrics.QUEUE_DEPTH.set(depth)
        return depth

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def live_workers(self) -> int:
        """Workers that heartbeated within three heartbeat intervals (a worker beats while it runs)."""
        since = time.time() - 3 * self.heartbeat_interval_s
        return int(await self.redis.zcount(self.workers_key, since, "+inf"))

    async def close(self) -> None:
        if self._owned:
            await self.redis.aclose()

    # The worker's side.

    @property
    def heartbeat_interval_s(self) -> float:
        return self.claim_idle_ms / 3000.0

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

    async def complete(self, part: Slice, images: list[bytes]) -> None:
        entry_id = self._held[part.job.id]
        args: list[Any] = [self.group, entry_id, part.job.n, self.result_ttl_s]
        for i, png in zip(range(part.start, part.stop), images, strict=True):
            args += [i, json.dumps({"i": i, "png": base64.b64encode(png).decode()})]
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
        """Record this worker as alive and reset the idle time of the entries it holds."""
        await self.redis.zadd(self.workers_key, {self.consumer: time.time()})
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
        return [self.stream, self.depth_key, self.done_key(job.id), self.result_key(job.id), self.dead_key]
