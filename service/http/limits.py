"""Per-client limits: requests and cost per minute, as token buckets; over them, 429 with when to retry."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.errors import ServiceError


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """One bucket per client holding up to `per_minute` tokens, refilled at `per_minute` a minute."""

    def __init__(self, per_minute: float, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.what = what
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, client: str, tokens: float = 1.0) -> None:
        """Spend `tokens` of `client`'s bucket, or raise 429 `rate_limit_exceeded` with a Retry-After."""
        now = self.clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(self.capacity, now)
            if len(self._buckets) > 100_000:  # forget full buckets: they hold nothing worth keeping
                self._forget(now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if tokens > self.capacity:
            raise ServiceError(
                429,
                "rate_limit_exceeded",
                f"this request alone is over your {self.what} limit of {self.capacity:g} a minute",
                headers={"Retry-After": "60"},
            )
        if bucket.tokens < tokens:
            wait = math.ceil((tokens - bucket.tokens) / self.rate)
            raise ServiceError(
                429,
                "rate_limit_exceeded",
                f"over your {self.what} limit of {self.capacity:g} a minute; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        bucket.tokens -= tokens

    def _forget(self, now: float) -> None:
        for client, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.stamp) * self.rate >= self.capacity:
                del self._buckets[client]


class Limits:
    """A client's request and cost allowances (each off when None)."""

    def __init__(self, requests_per_minute: float | None, cost_per_minute: float | None) -> None:
        self.requests = None if requests_per_minute is None else TokenBuckets(requests_per_minute, "request")
        self.cost = None if cost_per_minute is None else TokenBuckets(cost_per_minute, "cost")

    def request(self, client: str) -> None:
        if self.requests is not None:
            self.requests.take(client)

    def spend(self, client: str, units: float) -> None:
        if self.cost is not None:
            self.cost.take(client, units)
