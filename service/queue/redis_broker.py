"""The Redis Streams broker: any number of API processes and GPU workers sharing one Redis.

Keys, all under `prefix`; each model has its own queue, which only its workers read:
    {prefix}:jobs:{model}   stream of admitted jobs (fields `n`, the images, and `job`, see
                            `service.queue.codec`), read by the consumer group `group`
    {prefix}:depth:{model}  images of that stream's entries not yet acknowledged (`paella_queue_depth`)
    {prefix}:cost:{model}   their cost in thousandths of a unit (`service.queue.admission`): admission
    {prefix}:rate:{model}   hash of each worker's measured rate: consumer -> "units/s server-time"
    {prefix}:dead:{model}   dead letters, capped near 1000: job id, entry, deliveries and error (no payload)
    {prefix}:queues         set of the models that have a queue
    {prefix}:job:{id}       marker of an admitted job (its entry id), until its deadline plus
                            `result_ttl_s`: a waiting API process answers 503 `queue_lost` once it is gone
    {prefix}:done:{id}      hash of the image indices pushed (and `error`, `cancelled`): makes storing
                            idempotent; `cancelled` (set by the API when nobody waits) makes workers drop it
    {prefix}:reply:{api}    list an API process BLPOPs and workers RPUSH its jobs' messages to:
                            `{"job": id, "i": index, "data": base64}` per image, with `"preview": number`
                            for a preview, or `{"job": id, "error": {...}}`
    {prefix}:models         sorted set of served models (name -> server time of a worker's last heartbeat);
                            models silent for `liveness_s` are dropped; `paella api` is ready while one is
    {prefix}:model:{name}   the model's `ModelConfig` as JSON, refreshed with each heartbeat

An entry is acknowledged (XACK) and deleted (XDEL) by the same Lua script that stores its job's last
image, its error or its withdrawal, so depth and cost count exactly the unacknowledged entries, and a
worker killed at any point leaves its entries pending. Times (deadlines, heartbeats, rates) are on the
Redis server's clock. What happens to accepted work when Redis restarts is in RELIABILITY.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.queue.admission import Admission
from service.queue.broker import collect
from service.queue.jobs import Job
from service.queue.redis_api import RedisApi
from service.queue.redis_work import RedisWork

if TYPE_CHECKING:
    from service.settings import Settings


class RedisBroker(RedisApi, RedisWork):
    """Both sides of the queue on Redis: `RedisApi` admits and waits, `RedisWork` takes and answers.
    Its arguments are `RedisBase`'s."""

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
            admission=Admission(settings.max_queue_cost, settings.max_queue_wait_s, settings.retry_after_s),
            claim_idle_ms=settings.claim_idle_ms,
            max_deliveries=settings.max_deliveries,
            result_ttl_s=settings.result_ttl_s,
        )

    async def submit(self, job: Job) -> list[bytes]:
        return await collect(self, job)

    async def close(self) -> None:
        """Answer the requests still waiting 503 `shutting_down`; release the connection if owned."""
        await self._stop_listening()
        await self._close_connection()
