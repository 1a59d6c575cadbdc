"""The worker side of the Redis broker: entries taken by images, leases kept by heartbeats until a job's
deadline, stale leases reclaimed, suspects run alone, and every answer pushed to its API process."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import math
from collections.abc import Iterator
from typing import Any

from redis.exceptions import ResponseError

from model.config import ModelConfig
from service import metrics
from service.errors import ServiceError
from service.queue.admission import Throughput, cost
from service.queue.broker import Delivery
from service.queue.codec import decode_job, encode_job
from service.queue.jobs import Job, Slice
from service.queue.redis_base import MAX_BLOCK_S, UNAVAILABLE, RedisBase, milli
from service.queue.redis_scripts import DROP, FAIL, RECEIVE, REQUEUE, STORE

SCAN = 64  # most new entries one receive looks at


@dataclasses.dataclass
class _Held:
    entry: str
    job: Job
    suspect: bool = False


class RedisWork(RedisBase):
    """Takes its model's jobs from the stream (the `RECEIVE` script: as many entries as fit in the room
    the batcher has, by images), stores results and errors with the scripts that acknowledge them, and
    keeps a lease on what it holds.

    A lease is the entry's idle time: `heartbeat` resets it (XCLAIM JUSTID) for held jobs whose deadline
    plus `claim_idle_ms` has not passed, so a holder that hangs, loses Redis or gives a job up stops
    extending it, and another worker reclaims it (XAUTOCLAIM) within `claim_idle_ms`. A reclaimed job
    is a suspect: its worker vanished or stalled with it. A worker holding a suspect takes nothing else
    and runs it alone, so a job that crashes workers (a poison) takes no innocent job along; past
    `max_deliveries` deliveries it goes to the dead letters and its request gets 500 `worker_failed`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        register = self.redis.register_script
        self._receive, self._store, self._fail = register(RECEIVE), register(STORE), register(FAIL)
        self._drop, self._requeue = register(DROP), register(REQUEUE)
        self._held: dict[str, _Held] = {}  # job id -> its entry
        self._served: str | None = None  # the announced model's config, as JSON
        self._group_ready = False
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self.throughput = Throughput()

    @property
    def stream(self) -> str:
        """The worker side's stream."""
        if self.model is None:
            raise ValueError("the worker side needs the model it serves")
        return self.stream_key(self.model)

    async def announce(self, model: ModelConfig) -> None:
        """Publish the model this worker serves; `heartbeat` keeps it listed."""
        if model.name != self.model:
            raise ValueError(f"this worker takes jobs for {self.model!r}, not {model.name!r}")
        self._served = json.dumps(model.to_dict(), separators=(",", ":"))
        await self.heartbeat()

    async def receive(self, max_images: int, timeout_s: float) -> list[Delivery]:
        wait_s = min(timeout_s, self.heartbeat_interval_s, MAX_BLOCK_S)
        if any(h.suspect for h in self._held.values()):  # it runs alone: take nothing meanwhile
            await asyncio.sleep(wait_s)
            return []
        try:
            await self._ensure_group()
            loop = asyncio.get_running_loop()
            if loop.time() >= self._next_claim:
                reclaimed = await self._reclaim()
                if reclaimed:  # more may be waiting: look again as soon as this one is done
                    return reclaimed
                self._next_claim = loop.time() + self.claim_idle_ms / 2000.0
            taken = self._take(await self._receive(keys=[self.stream], args=self._receive_args(max_images)))
            if taken:
                return taken
            block_ms = int(wait_s * 1000)
            read: Any = await self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=1, block=block_ms or None
            )
            taken = self._take(read)
            room = max_images - sum(d.job.n for d in taken)
            if taken and room > 0:
                taken += self._take(await self._receive(keys=[self.stream], args=self._receive_args(room)))
            return taken
        except ResponseError as e:
            if "NOGROUP" in str(e):  # the stream is gone (deleted, or Redis restarted): recreate the group
                self._group_ready = False
                return []
            raise

    def _receive_args(self, room: int) -> list[Any]:
        return [self.group, self.consumer, max(1, room), SCAN]

    def _take(self, read: Any) -> list[Delivery]:
        deliveries = []
        for entry, fields in _entries(read):
            job = decode_job(fields[b"job"])
            self._held[job.id] = _Held(entry, job)
            deliveries.append(Delivery(job, 0))
        return deliveries

    async def _reclaim(self) -> list[Delivery]:
        """Take over one entry whose lease expired: a suspect, to run alone."""
        for _ in range(16):
            claimed: Any = await self.redis.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, self._claim_cursor, count=1
            )
            self._claim_cursor = claimed[0].decode()
            for raw_id, fields in claimed[1]:
                if fields is not None and (delivery := await self._reclaimed(raw_id.decode(), fields)):
                    return [delivery]
            if self._claim_cursor == "0-0":
                break
        return []

    async def _reclaimed(self, entry: str, fields: dict[bytes, bytes]) -> Delivery | None:
        """A reclaimed entry as a delivery; None if it is finished, withdrawn or dead-lettered."""
        if any(h.entry == entry for h in self._held.values()):
            return None
        pending: Any = await self.redis.xpending_range(self.stream, self.group, entry, entry, 1)
        if not pending:  # acknowledged meanwhile
            return None
        deliveries = int(pending[0]["times_delivered"])
        job = decode_job(fields[b"job"])
        self._held[job.id] = _Held(entry, job, suspect=True)
        done = set(await self.redis.hkeys(self.done_key(job.id)))
        if done & {b"cancelled", b"error"}:  # withdrawn, or answered by a worker that died before acking
            await self._discard(job)
            return None
        if deliveries > self.max_deliveries:
            metrics.DEAD_LETTERS.inc()
            error = ServiceError(500, "worker_failed", f"the job failed on {self.max_deliveries} workers")
            await self._finish_failed(job, error, dead_after=deliveries)
            return None
        metrics.REDELIVERIES.inc()
        return Delivery(job, len(done), suspect=True)

    async def wanted(self, batch: list[Slice]) -> list[Slice]:
        """The batch less the jobs whose requests were withdrawn (dropped, never computed)."""
        jobs = list({p.job.id: p.job for p in batch}.values())
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job in jobs:
                    pipe.hexists(self.done_key(job.id), "cancelled")
                flags = await pipe.execute()
            withdrawn = {job.id for job, flag in zip(jobs, flags, strict=True) if flag}
            for job in jobs:
                if job.id in withdrawn:
                    await self._discard(job)
        except UNAVAILABLE:
            return batch  # compute it anyway: storing decides
        return [p for p in batch if p.job.id not in withdrawn]

    async def preview(self, part: Slice, previews: list[list[bytes]]) -> None:
        job = part.job
        messages = [
            _message(job, i, data, preview=number)
            for i, pictures in zip(range(part.start, part.stop), previews, strict=True)
            for number, data in enumerate(pictures)
        ]
        held = self._held.get(job.id)
        if messages and held is not None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.rpush(held.job.reply_to, *messages)
                pipe.expire(held.job.reply_to, self.result_ttl_s)
                await pipe.execute()

    async def complete(self, part: Slice, images: list[bytes]) -> None:
        job = part.job
        held = self._held.get(job.id)
        if held is None:  # given up (hung, withdrawn): whoever holds it now answers
            return
        args: list[Any] = [self.group, held.entry, job.n, milli(cost(job)), self.result_ttl_s]
        for i, data in zip(range(part.start, part.stop), images, strict=True):
            args += [i, _message(job, i, data)]
        await self._store(keys=[*self._counters(job), self.done_key(job.id), held.job.reply_to], args=args)
        if part.stop == job.n:
            self._held.pop(job.id, None)

    async def fail(self, job: Job, error: ServiceError) -> None:
        await self._finish_failed(job, error)

    async def _finish_failed(self, job: Job, error: ServiceError, *, dead_after: int = 0) -> None:
        held = self._held.pop(job.id, None)
        if held is None:
            return
        message = json.dumps({"job": job.id, "error": error.to_dict()})
        args: list[Any] = [self.group, held.entry, job.n, milli(cost(job)), self.result_ttl_s, message]
        args += [job.id if dead_after else "", dead_after]
        keys = [*self._counters(job), self.done_key(job.id), held.job.reply_to, self.dead_key(job.model)]
        await self._fail(keys=keys, args=args)

    async def _discard(self, job: Job) -> None:
        """Acknowledge and delete a job nobody waits for."""
        held = self._held.pop(job.id, None)
        if held is not None:
            await self._drop(keys=self._counters(job), args=[self.group, held.entry, job.n, milli(cost(job))])

    async def release(self, jobs: list[Job]) -> None:
        """Give the jobs back as new entries, at no delivery's cost, for any worker to take at once."""
        for job in jobs:
            held = self._held.pop(job.id, None)
            if held is not None:
                await self._requeue(keys=[self.stream], args=[self.group, held.entry, job.n, encode_job(job)])

    async def abandon(self, jobs: list[Job]) -> None:
        """Stop holding the jobs' entries: no heartbeat extends them, so another worker reclaims them."""
        for job in jobs:
            self._held.pop(job.id, None)

    async def record(self, units: float, seconds: float) -> None:
        """Measure the rate `heartbeat` publishes for the API's admission."""
        self.throughput.record(units, seconds)

    async def heartbeat(self) -> None:
        """Keep the announced model and this worker's rate listed (dropping models silent too long), and
        renew the lease of each held job whose deadline (plus `claim_idle_ms`) has not passed."""
        await self.sync_clock()
        now, ttl_ms = self.clock(), math.ceil(self.liveness_s * 1000)
        if self._served is not None and self.model is not None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(self.model_key(self.model), self._served, px=ttl_ms)
                pipe.zadd(self.models_key, {self.model: now})
                pipe.zremrangebyscore(self.models_key, "-inf", now - self.liveness_s)
                pipe.pexpire(self.models_key, ttl_ms)
                if self.throughput.rate is not None:
                    pipe.hset(
                        self.rate_key(self.model), self.consumer, f"{self.throughput.rate:.6g} {now:.3f}"
                    )
                    pipe.pexpire(self.rate_key(self.model), ttl_ms)
                await pipe.execute()
        grace = self.claim_idle_ms / 1000.0
        leases: list[Any] = [h.entry for h in self._held.values() if h.job.deadline + grace > now]
        if leases:
            await self.redis.xclaim(self.stream, self.group, self.consumer, 0, leases, justid=True)

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready = True

    def _counters(self, job: Job) -> list[str]:
        return [self.stream_key(job.model), self.depth_key(job.model), self.cost_key(job.model)]


def _message(job: Job, index: int, data: bytes, *, preview: int | None = None) -> str:
    body: dict[str, Any] = {"job": job.id, "i": index, "data": base64.b64encode(data).decode()}
    if preview is not None:
        body["preview"] = preview
    return json.dumps(body)


def _entries(read: Any) -> Iterator[tuple[str, dict[bytes, bytes]]]:
    """(entry id, fields) of an XREADGROUP answer, parsed by redis-py or raw from a script."""
    for _stream, entries in read or []:
        for raw_id, fields in entries:
            if isinstance(fields, list):
                fields = dict(zip(fields[::2], fields[1::2], strict=True))
            yield raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id), fields
