"""Keys, per-client allowances, CORS and the holes a hostile client looks for, through real HTTP."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from model.pipeline import Pipeline
from service.app import create_app
from service.settings import Settings
from tests.service.live import LiveServer, assert_error_shape

BODY = {"prompt": "a red circle", "size": "32x32", "steps": 1}


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir: Any) -> Pipeline:
    return Pipeline.from_folder(tiny_model_dir)


def serve(tiny_model_dir: Any, pipeline: Pipeline, **settings: Any) -> LiveServer:
    config = Settings(weights=tiny_model_dir, device="cpu", **settings)
    return LiveServer(create_app(config, pipeline=pipeline))


@pytest.fixture(scope="module")
def keyed(tiny_model_dir: Any, pipeline: Pipeline) -> Iterator[LiveServer]:
    with serve(tiny_model_dir, pipeline, api_keys="k-one, k-two", rate_limit_per_min=3) as live:
        yield live


def test_keys_guard_the_api_and_the_metrics_but_not_health(keyed: LiveServer) -> None:
    with keyed.client() as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic k-one"}):
            answer = client.get("/v1/models", headers=headers)
            assert_error_shape(answer, 401, "invalid_api_key")
            assert answer.headers["www-authenticate"] == "Bearer"
        assert_error_shape(client.get("/metrics"), 401, "invalid_api_key")
        assert_error_shape(client.post("/v1/images/generations", json=BODY), 401, "invalid_api_key")
        assert client.get("/v1/models", headers={"Authorization": "Bearer k-two"}).status_code == 200
        assert client.get("/metrics", headers={"Authorization": "Bearer k-one"}).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


def test_each_key_has_its_own_request_allowance_with_a_computed_retry_after(keyed: LiveServer) -> None:
    one, two = {"Authorization": "Bearer k-one"}, {"Authorization": "Bearer k-two"}
    with keyed.client() as client:
        for _ in range(3):
            assert client.post("/v1/images/generations", json=BODY, headers=one).status_code == 200
        refused = client.post("/v1/images/generations", json=BODY, headers=one)
        assert_error_shape(refused, 429, "rate_limit_exceeded")
        assert 1 <= int(refused.headers["retry-after"]) <= 20  # a token comes back every 20 s
        assert client.post("/v1/images/generations", json=BODY, headers=two).status_code == 200
        assert (
            'paella_requests_total{endpoint="/v1/images/generations",status="429"}'
            in client.get("/metrics", headers=one).text
        )


def test_cost_allowance_counts_pixels_steps_and_images(tiny_model_dir: Any, pipeline: Pipeline) -> None:
    unit = 32 * 32 * 1 / (256 * 256 * 8)  # one 32x32 picture at one step
    with serve(tiny_model_dir, pipeline, cost_limit_per_min=5 * unit) as live, live.client() as client:
        assert client.post("/v1/images/generations", json={**BODY, "n": 4}).status_code == 200
        assert_error_shape(
            client.post("/v1/images/generations", json={**BODY, "n": 2}), 429, "rate_limit_exceeded"
        )
        too_much = client.post("/v1/images/generations", json={**BODY, "n": 8})
        assert_error_shape(too_much, 429, "rate_limit_exceeded")
        assert "alone" in too_much.json()["error"]["message"]


def test_cors_is_off_by_default_and_answers_the_configured_origins(
    tiny_model_dir: Any, pipeline: Pipeline
) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with serve(tiny_model_dir, pipeline) as live, live.client() as client:
        answer = client.options("/v1/images/generations", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
    with serve(tiny_model_dir, pipeline, cors_origins="https://app.example") as live, live.client() as client:
        answer = client.options("/v1/images/generations", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
        other = client.options(
            "/v1/images/generations", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers


def test_a_trickled_body_is_cut_off_with_408(tiny_model_dir: Any, pipeline: Pipeline) -> None:
    with serve(tiny_model_dir, pipeline, body_timeout_s=0.5) as live:
        host, port = live.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            head = "POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            sock.sendall(f"{head}Content-Length: 200\r\n\r\n".encode())
            started = time.monotonic()
            answer = b""
            for (
                byte
            ) in b'{"prompt": "a red circle"':  # a byte every 0.1 s: each arrives in time, the body not
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.1)
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"request_timeout" in answer
        assert time.monotonic() - started < 5


def test_deeply_nested_json_is_a_400_on_every_kind_of_route(tiny_model_dir: Any, pipeline: Pipeline) -> None:
    deep = b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    headers = {"content-type": "application/json"}
    with serve(tiny_model_dir, pipeline) as live, live.client() as client:
        for path in ("/v1/images/generations", "/v1/images/edits", "/v1/images/compositions"):
            assert_error_shape(client.post(path, content=deep, headers=headers), 400), path
