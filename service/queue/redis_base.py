"""What both sides of the Redis broker share: a connection that retries and reconnects, the keys (laid
out in `service.queue.redis_broker`), the queue's clock, and Redis failures as 503s."""

from __future__ import annotations

import os
import socket
import time
import uuid

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

from service.errors import ServiceError
from service.queue.admission import Admission

# Longest one blocking command (BLPOP, XREADGROUP BLOCK) blocks the server side, well under the socket
# timeout: a connection that hangs is dropped and reopened, a blocked one is not.
MAX_BLOCK_S = 1.0
SOCKET_TIMEOUT_S = 5.0
UNAVAILABLE = (ConnectionError, TimeoutError, OSError)
"""What Redis raises while it is down, restarting, loading its data or out of reach."""


def connect(url: str, max_connections: int = 64) -> Redis:
    """A client on `url` whose commands retry a few times over a broken connection (reopening it), whose
    idle pooled connections are checked before use, whose sockets never hang for ever, and whose pool
    makes a command wait for a free connection (up to the socket timeout) rather than fail: a thousand
    concurrent requests share `max_connections`."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=SOCKET_TIMEOUT_S,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3),
        retry_on_error=[ConnectionError, TimeoutError],
        health_check_interval=10,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=2.0,
        socket_keepalive=True,
    )
    return Redis(connection_pool=pool)


def unavailable(retry_after_s: float) -> ServiceError:
    """503 `queue_unavailable`: Redis could not be reached; the request never got in."""
    return ServiceError(
        503,
        "queue_unavailable",
        "the queue is unreachable for now; retry shortly",
        headers={"Retry-After": str(max(1, round(retry_after_s)))},
    )


def milli(units: float) -> int:
    """Cost units as the integer thousandths the scripts count in."""
    return round(units * 1000)


class RedisBase:
    """The connection, keys, settings and clock of both sides (`RedisApi`, `RedisWork`).

    Args:
        redis: a Redis URL (the broker then owns its connection pool and `close()` releases it) or
            a `redis.asyncio.Redis` built with `decode_responses=False` (left open by `close()`).
        prefix: prefix of every key.
        model: the worker side's model: the queue it takes jobs from (None on the API side).
        group: consumer group of the workers.
        consumer: this process's name (the worker's in the group); default `host-pid-random`.
        admission: the admission policy: cost cap, wait, `Retry-After` (the API side's).
        claim_idle_ms: a lease: pending entries idle this long are reclaimed from their worker.
        max_deliveries: deliveries after which an unfinished entry goes to the dead letters.
        result_ttl_s: lifetime of results, of the idempotency record and of a job's marker past its deadline.
    """

    def __init__(
        self,
        redis: str | Redis,
        *,
        prefix: str = "paella",
        model: str | None = None,
        group: str = "workers",
        consumer: str | None = None,
        admission: Admission | None = None,
        claim_idle_ms: int = 5_000,
        max_deliveries: int = 3,
        result_ttl_s: int = 300,
    ) -> None:
        self._owned = isinstance(redis, str)
        self.redis: Redis = connect(redis) if isinstance(redis, str) else redis
        self.prefix = prefix
        self.model = model
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.admission = admission or Admission(max_queue_cost=256.0, max_queue_wait_s=5.0)
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.result_ttl_s = result_ttl_s
        self._offset = 0.0  # the Redis server's clock minus this host's
        self._synced = -float("inf")

    def stream_key(self, model: str) -> str:
        return f"{self.prefix}:jobs:{model}"

    def depth_key(self, model: str) -> str:
        return f"{self.prefix}:depth:{model}"

    def cost_key(self, model: str) -> str:
        return f"{self.prefix}:cost:{model}"

    def dead_key(self, model: str) -> str:
        return f"{self.prefix}:dead:{model}"

    def rate_key(self, model: str) -> str:
        return f"{self.prefix}:rate:{model}"

    @property
    def queues_key(self) -> str:
        return f"{self.prefix}:queues"

    @property
    def models_key(self) -> str:
        return f"{self.prefix}:models"

    def model_key(self, name: str) -> str:
        return f"{self.prefix}:model:{name}"

    def reply_key(self, consumer: str) -> str:
        return f"{self.prefix}:reply:{consumer}"

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def done_key(self, job_id: str) -> str:
        return f"{self.prefix}:done:{job_id}"

    @property
    def heartbeat_interval_s(self) -> float:
        return self.claim_idle_ms / 3000.0

    @property
    def liveness_s(self) -> float:
        """How long a model (and a worker's measured rate) stays listed after its last heartbeat."""
        return 3 * self.heartbeat_interval_s

    def clock(self) -> float:
        """Seconds on the Redis server's clock: every host's deadlines and heartbeats compare on it."""
        return time.time() + self._offset

    async def sync_clock(self, every_s: float = 30.0) -> None:
        """Measure the Redis server's clock against this host's (at most every `every_s`)."""
        if time.monotonic() - self._synced < every_s:
            return
        before = time.time()
        seconds, micros = await self.redis.time()
        after = time.time()
        self._offset = seconds + micros / 1e6 - (before + after) / 2
        self._synced = time.monotonic()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except UNAVAILABLE:
            return False

    async def _close_connection(self) -> None:
        if self._owned:
            await self.redis.aclose(close_connection_pool=True)
