"""Health, readiness, models, metrics and the OpenAPI document through real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from model.pipeline import Pipeline
from service.app import create_app, make_worker
from service.settings import Settings
from tests.service.fakes import inprocess
from tests.service.live import LiveServer, assert_error_shape


class SlowWarmup:
    """A pipeline whose warm-up waits for `release`, to watch readiness before and after it."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipeline, name)

    def warmup(self, largest: int, *, width: int, height: int) -> dict[int, float]:
        self.release.wait(timeout=30)
        return self.pipeline.warmup(largest, width=width, height=height)


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir: Any) -> Pipeline:
    return Pipeline.from_folder(tiny_model_dir)


@pytest.fixture(scope="module")
def client(tiny_model_dir: Any, pipeline: Pipeline) -> Iterator[httpx.Client]:
    settings = Settings(weights=tiny_model_dir, device="cpu")
    with LiveServer(create_app(settings, pipeline=pipeline)) as live, live.client() as c:
        yield c


def test_ready_only_after_warmup(tiny_model_dir: Any, pipeline: Pipeline) -> None:
    slow = SlowWarmup(pipeline)
    settings = Settings(weights=tiny_model_dir, device="cpu")
    with LiveServer(create_app(settings, pipeline=slow), ready=False) as live, live.client() as client:  # type: ignore[arg-type]
        assert client.get("/healthz").json() == {"status": "ok"}
        assert_error_shape(client.get("/readyz"), 503, "not_ready")
        slow.release.set()
        for _ in range(500):
            if client.get("/readyz").status_code == 200:
                break
            threading.Event().wait(0.02)
        assert client.get("/readyz").json() == {"status": "ready"}


def test_models_lists_the_served_model(client: httpx.Client, pipeline: Pipeline) -> None:
    (card,) = client.get("/v1/models").json()["data"]
    assert card["id"] == pipeline.config.name
    assert card["object"] == "model"
    assert card["image_size"] == pipeline.config.image_size
    assert card["size_multiple"] == pipeline.config.size_multiple


def test_metrics_count_requests_by_endpoint_and_status(client: httpx.Client) -> None:
    client.post("/v1/images/generations", json={"prompt": "x", "n": 99})
    text = client.get("/metrics").text
    assert 'paella_requests_total{endpoint="/v1/images/generations",status="400"}' in text
    assert 'paella_request_duration_seconds_bucket{endpoint="/v1/images/generations",le="0.5"}' in text
    assert 'paella_rejected_total{reason="invalid_input"}' in text
    assert "paella_worker_up" in text


def test_openapi_lists_every_field_with_its_bounds(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    generation = schemas["GenerationRequest"]
    assert generation["additionalProperties"] is False
    props = generation["properties"]
    assert (props["n"]["minimum"], props["n"]["maximum"]) == (1, 8)
    steps = next(s for s in props["steps"]["anyOf"] if s["type"] == "integer")
    assert (steps["minimum"], steps["maximum"]) == (1, 64)
    mass = next(s for s in props["typical_mass"]["anyOf"] if s["type"] == "number")
    assert (mass["minimum"], mass["maximum"]) == (0, 1)
    assert "pattern" in next(s for s in props["size"]["anyOf"] if s["type"] == "string")

    edits = doc["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]
    assert set(edits) == {"application/json", "multipart/form-data"}
    assert edits["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
    structural = doc["paths"]["/v1/images/structural-edits"]["post"]["requestBody"]["content"]
    strength = structural["application/json"]["schema"]["properties"]["strength"]
    assert (strength["minimum"], strength["maximum"]) == (0, 1)
    interpolation = doc["paths"]["/v1/images/interpolations"]["post"]["requestBody"]["content"]
    frames = interpolation["application/json"]["schema"]["properties"]["frames"]
    assert (frames["minimum"], frames["maximum"]) == (2, 16)
    region = schemas["Region"]["properties"]
    assert (region["weight"]["exclusiveMinimum"], region["weight"]["maximum"]) == (0, 10)
    for path in [
        "/v1/images/generations",
        "/v1/images/outpaints",
        "/v1/images/variations",
        "/v1/images/compositions",
    ]:
        assert path in doc["paths"]
    assert "ErrorResponse" in schemas


class FailingWarmup(SlowWarmup):
    def warmup(self, largest: int, *, width: int, height: int) -> dict[int, float]:
        raise RuntimeError("CUDA error: out of memory")


def test_liveness_fails_when_the_worker_cannot_serve(
    tiny_model_dir: Any, pipeline: Pipeline, tmp_path: Any
) -> None:
    settings = Settings(weights=tiny_model_dir, device="cpu")
    broken = FailingWarmup(pipeline)
    with LiveServer(create_app(settings, pipeline=broken), ready=False) as live, live.client() as client:  # type: ignore[arg-type]
        for _ in range(500):
            if client.get("/healthz").status_code == 503:
                break
            threading.Event().wait(0.02)
        assert_error_shape(client.get("/healthz"), 503, "unhealthy")
        assert_error_shape(client.get("/readyz"), 503, "not_ready")
        answer = client.post("/v1/images/generations", json={"prompt": "a red circle"})
        assert_error_shape(answer, 503, "worker_unavailable")  # at once, not at the deadline
    nowhere = Settings(weights=tmp_path / "missing", device="cpu")
    with LiveServer(create_app(nowhere), ready=False) as live, live.client() as client:
        for _ in range(500):
            if client.get("/healthz").status_code == 503:
                break
            threading.Event().wait(0.02)
        assert_error_shape(client.get("/healthz"), 503, "unhealthy")
        error = assert_error_shape(client.get("/readyz"), 503, "not_ready")
        assert str(tmp_path) not in error["message"]  # no internal paths or exception text


def test_batches_in_flight_default_to_one_on_a_cpu_and_follow_the_setting(
    tiny_model_dir: Any, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = inprocess()
    assert make_worker(Settings(weights=tiny_model_dir, device="cpu"), queue, pipeline).max_in_flight == 1
    monkeypatch.setenv("PAELLA_BATCHES_IN_FLIGHT", "2")
    assert make_worker(Settings(weights=tiny_model_dir, device="cpu"), queue, pipeline).max_in_flight == 2
    monkeypatch.setenv("PAELLA_BATCHES_IN_FLIGHT", "3")
    with pytest.raises(ValidationError, match="batches_in_flight"):
        Settings(weights=tiny_model_dir, device="cpu")


def test_variations_batch_apart_only_with_an_image_denoiser(tiny_model_dir: Any, pipeline: Pipeline) -> None:
    settings = Settings(weights=tiny_model_dir, device="cpu")
    assert pipeline.image_denoiser is None
    assert make_worker(settings, inprocess(), pipeline).batcher.variations_apart is False
    pipeline.image_denoiser = pipeline.denoiser  # a folder with model_50000_img's network
    try:
        assert make_worker(settings, inprocess(), pipeline).batcher.variations_apart is True
    finally:
        pipeline.image_denoiser = None
