"""The stores of URL answers, in memory and on a real Redis: images live their TTL, the oldest go first when
the bytes would pass the bound, and unknown or expired ids find nothing."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from service.errors import ServiceError
from service.http.image_store import MemoryImageStore, RedisImageStore, media_type
from tests.service.test_redis_broker import run


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_memory_store_expires_and_stays_within_its_bytes() -> None:
    async def scenario() -> None:
        clock = Clock()
        store = MemoryImageStore(ttl_s=10, max_bytes=100, clock=clock)
        a = await store.put(b"a" * 40, "png")
        clock.now = 1
        b = await store.put(b"b" * 40, "webp")
        assert (await store.get(a), media_type(b)) == (b"a" * 40, "image/webp")
        clock.now = 2
        c = await store.put(b"c" * 40, "png")  # 120 bytes would pass 100: the oldest goes
        assert await store.get(a) is None and await store.get(b) == b"b" * 40 and store.bytes == 80
        clock.now = 11  # b's hour is up, c's not yet
        assert await store.get(b) is None and await store.get(c) == b"c" * 40 and store.bytes == 40
        assert await store.get("nothing.png") is None
        with pytest.raises(ServiceError) as info:
            await store.put(b"x" * 101, "png")
        assert info.value.code == "image_not_stored"
        assert len({a, b, c}) == 3 and all(len(i.split(".")[0]) == 32 for i in (a, b, c))

    asyncio.run(scenario())


@pytest.mark.redis
def test_redis_store_expires_and_stays_within_its_bytes() -> None:
    async def scenario(client: Redis, prefix: str) -> None:
        store = RedisImageStore(client, prefix=prefix, ttl_s=0.5, max_bytes=100)
        a = await store.put(b"a" * 40, "png")
        b = await store.put(b"b" * 40, "png")
        c = await store.put(b"c" * 40, "png")
        assert await store.get(a) is None and await store.get(b) == b"b" * 40
        assert int(await client.get(f"{prefix}:images:bytes") or 0) == 80
        assert 0 < await client.pttl(store.image_key(c)) <= 500
        assert await store.get("../../etc.png") is None
        await asyncio.sleep(0.6)
        assert await store.get(c) is None
        assert await client.exists(f"{prefix}:images", f"{prefix}:images:sizes") == 0  # nothing lingers
        d = await store.put(b"d" * 40, "png")  # the expired ones are forgotten, and the count with them
        assert await store.get(d) == b"d" * 40
        assert int(await client.get(f"{prefix}:images:bytes") or 0) == 40

    run(scenario)
