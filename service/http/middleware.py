"""ASGI middleware: request ids (and the answer to unexpected errors), the request-body limit and the
per-endpoint request metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.errors import ServiceError
from service.http.errors import error_response

log = logging.getLogger(__name__)

# A client's own request id is echoed when it looks like one: printable, without spaces, not too long.
_CLIENT_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


class HttpMiddleware:
    """An ASGI middleware that acts on HTTP requests (`http`); every other scope passes straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class RequestId(HttpMiddleware):
    """Put `x-request-id` on every answer: the client's own, else a new one. An exception nothing else
    answered is logged with the id and answered 500 `internal_error` in the one error shape."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _CLIENT_ID.match(given) else f"req_{uuid.uuid4().hex}"
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            log.exception("unhandled error on %s %s [%s]", scope["method"], scope["path"], request_id)
            if started:
                raise
            await error_response(ServiceError(500, "internal_error", "internal server error"))(
                scope, receive, sending
            )


class BodyTooLarge(HTTPException):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than {max_bytes} bytes")


class BodyLimit(HttpMiddleware):
    """Refuse bodies over `max_bytes`: by Content-Length up front, else while they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            too_large = ServiceError(413, "body_too_large", BodyTooLarge(self.max_bytes).detail)
            await error_response(too_large)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


class RequestMetrics(HttpMiddleware):
    """Count and time every request by its route's path template and status; count bad image requests."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            metrics.REQUESTS.labels(endpoint=endpoint, status=str(status)).inc()
            if endpoint.startswith("/v1/images/") and 400 <= status < 500:
                metrics.REJECTED.labels(reason="invalid_input").inc()
            metrics.REQUEST_DURATION.labels(endpoint=endpoint).observe(time.perf_counter() - start)
