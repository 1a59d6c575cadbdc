"""Who may call the API: optional API keys (`Authorization: Bearer <key>`) and each client's request
allowance, checked before a body is read. A client is its key (by a short digest, never the key itself)
or, without keys, its address."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServiceError
from service.http.errors import error_response
from service.http.limits import Limits

PROTECTED = ("/v1/", "/metrics")  # health, readiness, the playground and the API's description stay open


def client_of(scope: Scope) -> str:
    """The client a request counts against (set by `Access`)."""
    return str(scope.get("state", {}).get("client", "anonymous"))


class Access:
    """Refuse calls without a valid key (401 `invalid_api_key`) when keys are set; count each client's
    requests against its allowance (429 `rate_limit_exceeded`)."""

    def __init__(self, app: ASGIApp, *, keys: Iterable[str], limits: Limits) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED):
            await self.app(scope, receive, send)
            return
        try:
            client = self._client(scope)
            if scope["path"].startswith("/v1/images/"):
                self.limits.request(client)
        except ServiceError as e:
            await error_response(e.status, e.code, e.message, e.field, e.headers)(scope, receive, send)
            return
        scope.setdefault("state", {})["client"] = client
        await self.app(scope, receive, send)

    def _client(self, scope: Scope) -> str:
        if not self.keys:
            address = scope.get("client")
            return f"address:{address[0]}" if address else "anonymous"
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() == b"bearer" and given:
            for key in self.keys:
                if hmac.compare_digest(given.strip(), key):
                    return "key:" + hashlib.sha256(key).hexdigest()[:12]
        raise ServiceError(
            401,
            "invalid_api_key",
            "a valid API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
