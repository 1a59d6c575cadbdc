"""Where `response_format: "url"` images wait to be fetched: for `image_ttl_s` (an hour by default), within a
bound in bytes (the oldest go first), under ids no one can guess. In this process (`MemoryImageStore`),
or in Redis when several API processes must answer for one another's links (`RedisImageStore`).
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from redis.asyncio import Redis

from service.errors import ServiceError
from service.queue.redis_base import UNAVAILABLE, connect, unavailable

_ID = re.compile(r"^[A-Za-z0-9_-]{32}\.(png|jpeg|webp|gif)$")


def new_id(extension: str) -> str:
    """An unguessable id (192 random bits) with the image's extension, which gives its media type."""
    return f"{secrets.token_urlsafe(24)}.{extension}"


def media_type(image_id: str) -> str:
    return f"image/{image_id.rsplit('.', 1)[-1]}"


def _fits(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise ServiceError(
            500, "image_not_stored", f"an image of {len(data)} bytes is larger than the whole image store"
        )


class ImageStore(Protocol):
    async def put(self, data: bytes, extension: str) -> str:
        """Keep `data` for the store's lifetime; returns its id (`new_id`)."""
        ...

    async def get(self, image_id: str) -> bytes | None:
        """The image, or None once expired or evicted (or never stored)."""
        ...

    async def close(self) -> None: ...


class MemoryImageStore:
    """Images in this process's memory, oldest first."""

    def __init__(self, *, ttl_s: float, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.clock = clock
        self._images: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # id -> (expiry, data)
        self.bytes = 0

    async def put(self, data: bytes, extension: str) -> str:
        _fits(data, self.max_bytes)
        self._expire()
        while self._images and self.bytes + len(data) > self.max_bytes:
            self._drop(next(iter(self._images)))
        image_id = new_id(extension)
        self._images[image_id] = (self.clock() + self.ttl_s, data)
        self.bytes += len(data)
        return image_id

    async def get(self, image_id: str) -> bytes | None:
        self._expire()
        found = self._images.get(image_id)
        return None if found is None else found[1]

    async def close(self) -> None:
        self._images.clear()
        self.bytes = 0

    def _expire(self) -> None:
        now = self.clock()
        while self._images and next(iter(self._images.values()))[0] <= now:
            self._drop(next(iter(self._images)))

    def _drop(self, image_id: str) -> None:
        self.bytes -= len(self._images.pop(image_id)[1])


# KEYS: ids (oldest first), sizes (id -> bytes), total bytes. ARGV: id, data, ttl ms, max bytes, the image
# keys' prefix. The oldest ids go while they have expired or the new image would not fit.
_PUT = """
local size = string.len(ARGV[2])
while redis.call('LLEN', KEYS[1]) > 0 do
  local oldest = redis.call('LINDEX', KEYS[1], 0)
  local over = tonumber(redis.call('GET', KEYS[3]) or '0') + size > tonumber(ARGV[4])
  if redis.call('EXISTS', ARGV[5] .. oldest) == 1 and not over then break end
  redis.call('LPOP', KEYS[1])
  redis.call('DECRBY', KEYS[3], tonumber(redis.call('HGET', KEYS[2], oldest) or '0'))
  redis.call('HDEL', KEYS[2], oldest)
  redis.call('DEL', ARGV[5] .. oldest)
end
redis.call('SET', ARGV[5] .. ARGV[1], ARGV[2], 'PX', ARGV[3])
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], size)
redis.call('INCRBY', KEYS[3], size)
for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], ARGV[3]) end
"""


class RedisImageStore:
    """Images in Redis, shared by every API process: `{prefix}:image:{id}` (expiring with the image),
    and the bookkeeping of the bound, `{prefix}:images` (the ids, oldest first), `{prefix}:images:sizes`
    and `{prefix}:images:bytes`, which expire with the newest image.

    Args:
        redis: a Redis URL (the store then owns its connection pool) or a `redis.asyncio.Redis`.
    """

    def __init__(self, redis: str | Redis, *, prefix: str, ttl_s: float, max_bytes: int) -> None:
        self._owned = isinstance(redis, str)
        self.redis: Redis = connect(redis) if isinstance(redis, str) else redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._put = self.redis.register_script(_PUT)

    def image_key(self, image_id: str) -> str:
        return f"{self.prefix}:image:{image_id}"

    async def put(self, data: bytes, extension: str) -> str:
        _fits(data, self.max_bytes)
        image_id = new_id(extension)
        p = self.prefix
        keys = [f"{p}:images", f"{p}:images:sizes", f"{p}:images:bytes"]
        ttl_ms = max(1, int(self.ttl_s * 1000))
        try:
            await self._put(keys=keys, args=[image_id, data, ttl_ms, self.max_bytes, f"{p}:image:"])
        except UNAVAILABLE:
            raise unavailable(1) from None
        return image_id

    async def get(self, image_id: str) -> bytes | None:
        if not _ID.match(image_id):
            return None
        try:
            data: Any = await self.redis.get(self.image_key(image_id))
        except UNAVAILABLE:
            raise unavailable(1) from None
        return None if data is None else bytes(data)

    async def close(self) -> None:
        if self._owned:
            await self.redis.aclose(close_connection_pool=True)
