"""Who gets into the queue. A job costs its pixels x steps x images (in units of one 256x256 picture at
8 steps); the queue admits work up to what the workers can finish within `max_queue_wait_s` at their
measured rate, and never past `max_queue_cost`. What is turned away is told when to come back."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from service.errors import QueueFull, ServiceError
from service.queue.jobs import Job

UNIT = 256 * 256 * 8  # pixels x steps of one cost unit


def cost(job: Job) -> float:
    """The job's work in cost units."""
    width, height = job.op.size
    return job.n * width * height * job.sampler.steps / UNIT


class Throughput:
    """Cost units per second of busy worker time, as a moving average over batches (Ewma)."""

    def __init__(self, half_life_s: float = 20.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.half_life_s = half_life_s
        self.clock = clock
        self.rate: float | None = None
        self._last = 0.0

    def record(self, units: float, seconds: float) -> None:
        """A batch of `units` took `seconds` of worker time."""
        if seconds <= 0 or units <= 0:
            return
        now = self.clock()
        sample = units / seconds
        if self.rate is None:
            self.rate = sample
        else:
            keep = 0.5 ** (min(seconds, now - self._last) / self.half_life_s)
            self.rate = keep * self.rate + (1 - keep) * sample
        self._last = now


class Admission:
    """The admission policy; brokers call `check` with what they hold and what a job would add.

    Args:
        max_queue_cost: never admit past this many cost units queued or in progress.
        max_queue_wait_s: admit only what the workers' measured rate finishes within this many seconds.
        retry_after_s: the `Retry-After` sent while no rate has been measured yet.
    """

    def __init__(self, max_queue_cost: float, max_queue_wait_s: float, retry_after_s: float = 1.0) -> None:
        self.max_queue_cost = max_queue_cost
        self.max_queue_wait_s = max_queue_wait_s
        self.retry_after_s = retry_after_s

    def allowed(self, rate: float | None) -> float:
        """The cost that may be queued now: what `rate` finishes within the wait, at most the cap."""
        if rate is None:
            return self.max_queue_cost
        return min(self.max_queue_cost, max(rate * self.max_queue_wait_s, 1.0))

    def check(self, queued: float, units: float, rate: float | None) -> None:
        """Raise `QueueFull` (503, with when to retry) or 413 `request_too_large` unless `units` fit."""
        self.check_size(units)
        if queued > 0 and queued + units > self.allowed(rate):  # an empty queue takes any job within the cap
            raise self.refusal(queued, units, rate)

    def check_size(self, units: float) -> None:
        """413 `request_too_large` for a job more than the queue ever holds: never worth retrying."""
        if units > self.max_queue_cost:
            raise ServiceError(
                413,
                "request_too_large",
                f"this request costs {units:.1f} units, more than the queue ever holds "
                f"({self.max_queue_cost:g}); ask for fewer or smaller images or fewer steps",
            )

    def refusal(self, queued: float, units: float, rate: float | None) -> QueueFull:
        """The 503 for a job that does not fit now, with the seconds until `rate` has made room for it."""
        excess = queued + units - self.allowed(rate)
        wait = excess / rate if rate else self.retry_after_s
        return QueueFull(min(60.0, max(1.0, math.ceil(wait))))
