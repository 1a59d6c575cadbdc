"""The one JSON error shape, OpenAI's `{"error": {"message", "type", "param", "code"}}`, for every 4xx and 5xx
answer, with `x-should-retry: false` where retrying cannot help (every status but 503)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import metrics
from service.errors import ServiceError

# Errors that mean the service turned work away rather than the request being wrong.
_REJECTIONS = {"queue_full", "deadline_exceeded"}


class ErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error (4xx) or server_error (5xx)")
    param: str | None = Field(default=None, description="the offending request field, if one is")
    code: str = Field(description="what went wrong, to switch on")


class ErrorResponse(BaseModel):
    """What every failed request answers."""

    error: ErrorDetail


def error_body(error: ServiceError) -> dict[str, Any]:
    """`{"error": {...}}` of an error, as answered and as sent in an event stream."""
    detail = ErrorDetail(message=error.message, type=error.type, param=error.field, code=error.code)
    return ErrorResponse(error=detail).model_dump()


def error_response(error: ServiceError) -> JSONResponse:
    headers = dict(error.headers)
    if not error.retryable:
        headers["x-should-retry"] = "false"
    return JSONResponse(error_body(error), status_code=error.status, headers=headers)


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


def count_rejection(error: ServiceError) -> None:
    """Count the errors that mean the service turned work away (`paella_rejected_total`)."""
    if error.code in _REJECTIONS:
        metrics.REJECTED.labels(reason=error.code).inc()


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    count_rejection(exc)
    return error_response(exc)


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | ValidationError)
    return await _service_error(request, validation_error(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(ServiceError(exc.status_code, code, str(exc.detail), headers=exc.headers))


async def _too_deep(request: Request, exc: Exception) -> JSONResponse:
    return error_response(ServiceError(400, "invalid_json", "the body is nested too deeply"))


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app answers take the one shape (`RequestId` answers unexpected ones)."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RecursionError, _too_deep)  # JSON nested past the parser's depth
