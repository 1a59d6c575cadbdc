"""The service's one error type: an HTTP status, a code clients switch on, a message, maybe a field.

Raised on the HTTP side for bad input and on the queue and GPU sides for failed work; it crosses
Redis as a dict, and the HTTP side answers every one in the same JSON shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class ServiceError(Exception):
    """Answer `status` with `code`, `message`, the offending `field` and extra `headers`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> ServiceError:
        """The error again, as `DeadlineExceeded` where its code says so."""
        if d["code"] == DeadlineExceeded.code:
            return DeadlineExceeded(str(d["message"]))
        return ServiceError(int(d["status"]), str(d["code"]), str(d["message"]))


class QueueFull(ServiceError):
    """Admission refused before enqueueing: 503 with `Retry-After`."""

    def __init__(self, retry_after_s: float, message: str = "the queue is full, retry later") -> None:
        super().__init__(503, "queue_full", message, headers={"Retry-After": str(math.ceil(retry_after_s))})
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before all its images were made: 504."""

    code = "deadline_exceeded"

    def __init__(self, message: str = "the request's deadline passed before its images were ready") -> None:
        super().__init__(504, self.code, message)


def not_ready(reason: str) -> ServiceError:
    return ServiceError(503, "not_ready", reason, headers={"Retry-After": "1"})


def shutting_down() -> ServiceError:
    return ServiceError(503, "shutting_down", "the service is shutting down")


def generation_failed() -> ServiceError:
    return ServiceError(500, "generation_failed", "the images could not be generated")


def worker_unavailable() -> ServiceError:
    return ServiceError(
        503, "worker_unavailable", "no worker can run this now; retry", headers={"Retry-After": "5"}
    )
