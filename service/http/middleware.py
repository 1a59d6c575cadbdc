"""ASGI middleware: request ids (and the answer to unexpected errors), the request-body limits (size, and
time to arrive) and the per-endpoint request metrics."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Sequence

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs, metrics
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
    """Put `x-request-id` on every answer: the client's own, else a new one; every log line meanwhile
    carries it. An exception nothing else answered is logged and answered 500 `internal_error` in the one
    error shape."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _CLIENT_ID.match(given) else f"req_{uuid.uuid4().hex}"
        token = logs.request_id.set(request_id)
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
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if started:
                raise
            await error_response(ServiceError(500, "internal_error", "internal server error"))(
                scope, receive, sending
            )
        finally:
            logs.request_id.reset(token)


class BodyTooLarge(HTTPException):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than {max_bytes} bytes")


class BodyTimeout(HTTPException):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, f"the request body did not arrive within {timeout_s:g} s")


class BodyLimit(HttpMiddleware):
    """Refuse bodies over `max_bytes` (by Content-Length up front, else while they stream in) and bodies
    that take longer than `timeout_s` in all to arrive (a client trickling bytes holds no connection)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            too_large = ServiceError(413, "body_too_large", BodyTooLarge(self.max_bytes).detail)
            await error_response(too_large)(scope, receive, send)
            return
        received, complete = 0, False
        deadline = time.monotonic() + self.timeout_s

        async def limited() -> Message:
            nonlocal received, complete
            if complete:  # past the body only a disconnect can come, whenever the client leaves
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BodyTimeout(self.timeout_s) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


class RequestMetrics(HttpMiddleware):
    """Count and time every request by its route's path template and status (also those refused before
    routing, e.g. for a key); count bad image requests."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        super().__init__(app)
        self.routes = routes

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
            endpoint = self._endpoint(scope)
            metrics.REQUESTS.labels(endpoint=endpoint, status=str(status)).inc()
            if endpoint.startswith("/v1/images/") and 400 <= status < 500 and status not in (401, 429):
                metrics.REJECTED.labels(reason="invalid_input").inc()
            metrics.REQUEST_DURATION.labels(endpoint=endpoint).observe(time.perf_counter() - start)

    def _endpoint(self, scope: Scope) -> str:
        """The route's path template: bounded label values, never the raw path."""
        route = scope.get("route")
        if route is None:
            route = next((r for r in self.routes if r.matches(scope)[0] == Match.FULL), None)
        return str(getattr(route, "path", "unmatched"))
