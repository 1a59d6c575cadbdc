"""Log lines: JSON records carrying the request id, that id on every line of a request and in its answer,
uvicorn on the service's format, and never a prompt or an upload."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from model.pipeline import Pipeline
from service import logs
from service.app import create_app
from service.cli import build_parser
from service.settings import Settings
from tests.service.live import b64, png_bytes

REPO = Path(__file__).resolve().parents[2]
Call = tuple[str, str, dict[str, Any]]


def test_json_lines_carry_the_request_id_while_it_is_set() -> None:
    formatter = logs.JsonFormatter()

    def line(**extra: Any) -> dict[str, Any]:
        fields = {"name": "service.gpu.worker", "levelname": "ERROR", "msg": "job %s failed", "args": ("j1",)}
        record = logging.makeLogRecord({**fields, "created": 86400.25, "msecs": 250.0, **extra})
        return dict(json.loads(formatter.format(record)))

    outside = line()
    token = logs.request_id.set("req_abc")
    try:
        inside = line(job_id="j1")
    finally:
        logs.request_id.reset(token)
    head = {"time": "1970-01-02T00:00:00.250Z", "level": "error", "logger": "service.gpu.worker"}
    assert outside == {**head, "message": "job j1 failed"}
    assert inside == {**head, "message": "job j1 failed", "request_id": "req_abc", "job_id": "j1"}


# In place of serving: one line of uvicorn's access log while a request is handled, one line outside.
SERVE = """
import logging, sys, uvicorn
from service import cli, logs

def run(self, sockets=None):
    token = logs.request_id.set("req_cli")
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5", "POST", "/v1/x", "1.1", 200)
    logs.request_id.reset(token)
    logging.getLogger("service.app").info("outside")

uvicorn.Server.run = run
cli.main(["serve", "--log-format", sys.argv[1], "--log-level", "info"])
"""


@pytest.mark.parametrize("style", ["json", "text"])
def test_paella_serve_puts_uvicorn_on_the_same_format(style: str) -> None:
    run = subprocess.run(
        [sys.executable, "-c", SERVE, style], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    access, outside = run.stderr.splitlines()
    if style == "json":
        assert {k: v for k, v in json.loads(access).items() if k != "time"} == {
            "level": "info",
            "logger": "uvicorn.access",
            "message": '10.0.0.1:5 - "POST /v1/x HTTP/1.1" 200',
            "request_id": "req_cli",
        }
        assert "request_id" not in json.loads(outside)
    else:
        assert access.endswith(' INFO uvicorn.access [req_cli] 10.0.0.1:5 - "POST /v1/x HTTP/1.1" 200')
        assert outside.endswith(" INFO service.app [-] outside")


def test_serve_help_lists_the_log_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(["serve", "--help"])
    assert exit.value.code == 0
    assert "--log-format LOG_FORMAT" in capsys.readouterr().out


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir: Path) -> Pipeline:
    return Pipeline.from_folder(tiny_model_dir)


@pytest.fixture
def app(tiny_model_dir: Path, pipeline: Pipeline) -> FastAPI:
    return create_app(Settings(weights=tiny_model_dir, device="cpu", max_wait_ms=1), pipeline=pipeline)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every record logged in the test, at any level, as the service's JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def exchange(app: FastAPI, *calls: Call) -> list[httpx.Response]:
    """Start `app` (its lifespan, until ready), make `calls` (method, path, httpx arguments) through ASGI
    one after another, and stop it."""

    async def run() -> list[httpx.Response]:
        async with app.router.lifespan_context(app), asyncio.timeout(30):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://paella") as client:
                while (await client.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.01)
                return [await client.request(method, path, **kwargs) for method, path, kwargs in calls]

    return asyncio.run(run())


def generation(prompt: str, **fields: Any) -> Call:
    return "POST", "/v1/images/generations", {"json": {"prompt": prompt, "steps": 1, "seed": 1, **fields}}


def test_every_line_of_a_request_carries_its_answers_request_id(app: FastAPI, captured: io.StringIO) -> None:
    own = generation("a red circle")
    own[2]["headers"] = {"x-request-id": "client-42"}
    answers = exchange(app, generation("a red circle"), own)
    assert [a.status_code for a in answers] == [200, 200]
    ids = [a.headers["x-request-id"] for a in answers]
    assert ids[0].startswith("req_") and ids[1] == "client-42"
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    in_requests = [line for line in lines if "request_id" in line]
    assert [line["request_id"] for line in in_requests] == ids  # one line each, none leaking elsewhere
    for line in in_requests:
        assert line["logger"] == "service.http.routes"
        assert line["message"].startswith("job ") and line["message"].endswith(": 1 image(s) on tiny")


def test_no_prompt_or_upload_is_ever_logged(app: FastAPI, captured: io.StringIO) -> None:
    marker = f"marker{uuid.uuid4().hex}"
    upload = png_bytes(32, 32, "RGBA", (0, 0, 0, 0))  # all hole: edit it all
    edit = {"data": {"prompt": marker, "steps": "1"}, "files": {"image": ("in.png", upload, "image/png")}}
    answers = exchange(
        app,
        generation(f"a red {marker}"),
        ("POST", "/v1/images/edits", edit),
        generation(marker, n=10**6),  # refused
    )
    assert [a.status_code for a in answers] == [200, 200, 400]
    text = captured.getvalue()
    assert text.count(": 1 image(s) on tiny") == 2  # the requests were logged, without their contents
    assert marker not in text
    assert b64(upload) not in text
