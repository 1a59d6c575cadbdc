"""Logging of every process: plain text for a terminal or one JSON object a line for a log pipeline,
each record carrying the id of the request it belongs to. Prompts and uploads are never logged."""

from __future__ import annotations

import json
import logging
import logging.config
import time
from contextvars import ContextVar
from typing import Any, Literal

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the request being handled (set by the HTTP side), for every record logged meanwhile."""

# A record's own attributes (the rest are its extra fields); uvicorn's `color_message` repeats the message.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id, the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid is not None:
            out["request_id"] = rid
        out |= {k: v for k, v in vars(record).items() if k not in _STANDARD and k != "request_id"}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get() or "-"
        return True


def configure(level: str, style: Literal["text", "json"]) -> dict[str, Any]:
    """Configure the root logger and return the same as a `logging.config` dict for uvicorn's loggers."""
    handler: dict[str, Any] = {"class": "logging.StreamHandler", "formatter": "default"}
    formatter: dict[str, Any] = {"()": JsonFormatter}
    if style == "text":  # a column for the request id, "-" outside requests; JSON leaves the key out there
        formatter = {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
        handler["filters"] = ["request_id"]
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": _RequestId}},
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            name: {"handlers": ["default"], "level": level.upper(), "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
    logging.config.dictConfig(config)
    return config
