"""The one JSON error shape, `{"error": {"code", "message", "field"}}`, for every 4xx and 5xx answer."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import metrics
from service.errors import ServiceError

log = logging.getLogger(__name__)

# Errors that mean the service turned work away rather than the request being wrong.
_REJECTIONS = {"queue_full", "deadline_exceeded"}


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    """What every failed request answers."""

    error: ErrorDetail


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(code=code, message=message, field=field))
    return JSONResponse(body.model_dump(), status_code=status, headers=dict(headers or {}))


_PYDANTIC_CODES = {
    "extra_forbidden": "unknown_field",
    "unexpected_keyword_argument": "unknown_field",
    "missing": "missing_field",
}
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def _field_path(loc: Sequence[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def validation_error(errors: Sequence[Mapping[str, Any]]) -> ServiceError:
    """Turn pydantic's error list into one 400 naming the first offending field."""
    first = errors[0]
    field = _field_path(first.get("loc", ()))
    message = str(first.get("msg", "invalid request"))
    if field:
        message = f"{field}: {message}"
    return ServiceError(400, _PYDANTIC_CODES.get(str(first.get("type")), "invalid_value"), message, field)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if exc.code in _REJECTIONS:
        metrics.REJECTED.labels(reason=exc.code).inc()
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | ValidationError)
    return await _service_error(request, validation_error(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), None, exc.headers)


async def _too_deep(request: Request, exc: Exception) -> JSONResponse:
    return error_response(400, "invalid_json", "the body is nested too deeply")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app answers take the one shape."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RecursionError, _too_deep)  # JSON nested past the parser's depth
    app.add_exception_handler(Exception, _unexpected)
