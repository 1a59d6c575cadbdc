"""The micro-batching policy, pure: no I/O, no clock of its own; every decision takes `now`."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from service.queue.jobs import Job, Slice


@dataclass(order=True)
class _Pending:
    """A job's images not yet placed in a batch, from `next` on."""

    created: float
    job: Job = field(compare=False)
    next: int = field(compare=False)


class Batcher:
    """Groups jobs' images into batches of equal keys, oldest first.

    A key's batch is due when it holds `max_batch_size` images or when its oldest job has waited
    `max_wait_ms` since `job.created`. Among due keys the one with the oldest job goes first, so a
    busy key cannot starve a quiet one. A job's images may split across batches; its remainder is
    due at once (it has already waited). Callers drop expired work with `expire(now)` before asking
    for `next_batch(now)`, and sleep until `next_wakeup(now)` when nothing is due.

    Args:
        max_batch_size: most images in one batch.
        max_wait_ms: longest the oldest job of a key waits for company before its batch is sent.
        variations_apart: variations batch apart from other operations (`Job.key`): True where they run
            on a network of their own (an image denoiser).
    """

    def __init__(self, max_batch_size: int, max_wait_ms: float, *, variations_apart: bool = True) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.variations_apart = variations_apart
        self._keys: dict[Hashable, list[_Pending]] = {}

    def add(self, job: Job, start: int = 0, *, alone: bool = False) -> None:
        """Queue images `start:` of `job` (a redelivered job may be partly done); an `alone` job shares
        its batches with no other job."""
        if start < job.n:
            key = ("alone", job.id) if alone else job.key(variations_apart=self.variations_apart)
            bisect.insort(self._keys.setdefault(key, []), _Pending(job.created, job, start))

    @property
    def pending_images(self) -> int:
        return sum(p.job.n - p.next for queue in self._keys.values() for p in queue)

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._keys.values())

    def discard(self, job_id: str) -> None:
        """Forget whatever is left of a job (it failed or was answered elsewhere)."""
        self._filter(lambda p: p.job.id != job_id)

    def expire(self, now: float) -> list[Job]:
        """Remove and return the jobs whose deadline has passed."""
        expired = [p.job for queue in self._keys.values() for p in queue if p.job.deadline <= now]
        self._filter(lambda p: p.job.deadline > now)
        return expired

    def drain(self) -> list[Job]:
        """Remove and return every queued job, oldest first."""
        jobs = sorted((p for queue in self._keys.values() for p in queue), key=lambda p: p.created)
        self._keys.clear()
        return [p.job for p in jobs]

    def next_batch(self, now: float) -> list[Slice]:
        """The oldest due key's next batch, or `[]` when no key is due."""
        due = [key for key, queue in self._keys.items() if self._due(queue, now)]
        if not due:
            return []
        key = min(due, key=lambda k: self._keys[k][0].created)
        queue = self._keys[key]
        batch: list[Slice] = []
        room = self.max_batch_size
        while queue and room:
            pending = queue[0]
            stop = min(pending.job.n, pending.next + room)
            batch.append(Slice(pending.job, pending.next, stop))
            room -= stop - pending.next
            pending.next = stop
            if stop == pending.job.n:
                queue.pop(0)
        if not queue:
            del self._keys[key]
        return batch

    def next_wakeup(self, now: float) -> float | None:
        """When the next batch falls due or the next deadline passes; `now` if one is due already."""
        times = [t for queue in self._keys.values() for t in self._wakeups(queue, now)]
        return min(times, default=None)

    def _due(self, queue: list[_Pending], now: float) -> bool:
        images = sum(p.job.n - p.next for p in queue)
        return images >= self.max_batch_size or now >= queue[0].created + self.max_wait_s

    def _wakeups(self, queue: list[_Pending], now: float) -> list[float]:
        if self._due(queue, now):
            return [now]
        return [queue[0].created + self.max_wait_s, min(p.job.deadline for p in queue)]

    def _filter(self, keep: Callable[[_Pending], bool]) -> None:
        for key in list(self._keys):
            queue = [p for p in self._keys[key] if keep(p)]
            if queue:
                self._keys[key] = queue
            else:
                del self._keys[key]
