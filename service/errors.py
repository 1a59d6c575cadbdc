"""The one JSON error shape, `{"error": {"code", "message", "field"}}`, for every 4xx and 5xx."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.jobs import JobError, QueueFull

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    """What every failed request answers."""

    error: ErrorDetail


class ApiError(Exception):
    """An error a handler raises to answer `status` with the one error shape."""

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


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(code=code, message=message, field=field))
    return JSONResponse(body.model_dump(), status_code=status, headers=dict(headers or {}))


_PYDANTIC_CODES = {"extra_forbidden": "unknown_field", "missing": "missing_field"}
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def _field_path(loc: Sequence[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def validation_error(errors: Sequence[Mapping[str, Any]]) -> ApiError:
    """Turn pydantic's error list into one 400 naming the first offending field."""
    first = errors[0]
    field = _field_path(first.get("loc", ()))
    message = str(first.get("msg", "invalid request"))
    if field:
        message = f"{field}: {message}"
    return ApiError(400, _PYDANTIC_CODES.get(str(first.get("type")), "invalid_value"), message, field)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | ValidationError)
    return await _api_error(request, validation_error(exc.errors()))


async def _job_error(request: Request, exc: Exception) -> JSONResponse:
    """Queue and worker failures: 503 + Retry-After when full, 504 past the deadline, else as given."""
    assert isinstance(exc, JobError)
    headers = {"Retry-After": str(math.ceil(exc.retry_after_s))} if isinstance(exc, QueueFull) else None
    return error_response(exc.status, exc.code, exc.message, None, headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), None, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app answers take the one shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(JobError, _job_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
