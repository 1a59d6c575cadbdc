"""Jobs between the HTTP side and the GPU side: `Job`, `Slice`, the executor's type and job errors."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    """One request's work: `len(seeds)` images of one compatibility `key`, answered by `deadline`.

    `payload` is JSON-safe (images inside as base64 PNG strings) and opaque to the queue; only the
    executor reads it. `deadline` and `created` are `time.time()` seconds.
    """

    id: str
    endpoint: str
    key: str
    payload: dict[str, Any]
    seeds: list[int]
    deadline: float
    created: float = field(default_factory=time.time)

    @classmethod
    def new(
        cls,
        endpoint: str,
        key: str,
        payload: dict[str, Any],
        seeds: list[int],
        timeout_s: float,
        now: float | None = None,
    ) -> Job:
        """A job with a fresh id, created `now` and due `timeout_s` later."""
        created = time.time() if now is None else now
        return cls(uuid.uuid4().hex, endpoint, key, payload, list(seeds), created + timeout_s, created)

    @property
    def n(self) -> int:
        return len(self.seeds)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "endpoint": self.endpoint,
                "key": self.key,
                "payload": self.payload,
                "seeds": self.seeds,
                "deadline": self.deadline,
                "created": self.created,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> Job:
        d = json.loads(data)
        return cls(d["id"], d["endpoint"], d["key"], d["payload"], d["seeds"], d["deadline"], d["created"])


@dataclass(frozen=True)
class Slice:
    """Images `start:stop` of a job, placed in one batch."""

    job: Job
    start: int
    stop: int

    @property
    def n(self) -> int:
        return self.stop - self.start

    @property
    def seeds(self) -> list[int]:
        return self.job.seeds[self.start : self.stop]


Executor = Callable[[list[Slice]], list[list[bytes]]]
"""Runs one batch on the GPU: PNG bytes per slice, in seed order. Synchronous; may raise `JobError`."""


class JobError(Exception):
    """A job's failure as the API answers it: HTTP `status`, a `code` clients switch on, a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> JobError:
        """The error again, as `DeadlineExceeded` where its code says so, else `JobFailed`."""
        if d["code"] == DeadlineExceeded.code:
            return DeadlineExceeded(d["message"])
        return JobFailed(int(d["status"]), str(d["code"]), str(d["message"]))


class QueueFull(JobError):
    """Admission refused before enqueueing: answer 503 with `Retry-After: retry_after_s`."""

    def __init__(self, retry_after_s: float, message: str = "the queue is full, retry later") -> None:
        super().__init__(503, "queue_full", message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(JobError):
    """The request's deadline passed before all its images were made: answer 504."""

    code = "deadline_exceeded"

    def __init__(self, message: str = "the request's deadline passed before its images were ready") -> None:
        super().__init__(504, self.code, message)


class JobFailed(JobError):
    """The worker could not make the images (executor error, dead letter, shutdown)."""
