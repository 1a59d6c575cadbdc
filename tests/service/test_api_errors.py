"""Bad input, deadlines and a full queue through real HTTP: 4xx/5xx in the one error shape."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from model.config import ModelConfig
from model.pipeline import Pipeline
from service.app import create_app
from service.queue.admission import Admission
from service.queue.broker import Event
from service.queue.inprocess import InProcessBroker
from service.queue.jobs import Job
from service.settings import Settings
from tests.service.live import LiveServer, assert_error_shape, b64, metric, png_bytes

MAX_BODY = 256 * 1024
MAX_PIXELS = 512 * 512


class CountingBroker(InProcessBroker):
    """The in-process broker, counting the jobs that reach it."""

    submitted = 0

    async def enqueue(self, job: Job) -> AsyncIterator[Event]:
        self.submitted += 1
        return await super().enqueue(job)


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir: Any) -> Pipeline:
    return Pipeline.from_folder(tiny_model_dir)


def _settings(tiny_model_dir: Any, **changes: Any) -> Settings:
    return Settings(weights=tiny_model_dir, device="cpu", **changes)


@pytest.fixture(scope="module")
def broker() -> CountingBroker:
    return CountingBroker(Admission(max_queue_cost=64, max_queue_wait_s=60))


@pytest.fixture(scope="module")
def client(tiny_model_dir: Any, pipeline: Pipeline, broker: CountingBroker) -> Iterator[httpx.Client]:
    settings = _settings(tiny_model_dir, max_body_bytes=MAX_BODY, max_image_pixels=MAX_PIXELS)
    with LiveServer(create_app(settings, pipeline=pipeline, broker=broker)) as live, live.client() as c:
        yield c


@pytest.fixture(scope="module")
def m(client: httpx.Client) -> int:
    """The least side: twice the size multiple."""
    return 2 * int(client.get("/v1/models").json()["data"][0]["size_multiple"])


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height 1-bit pixels, with almost no data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _bad_requests(m: int) -> list[tuple[str, str, dict[str, Any], int, str, str | None]]:
    """(name, path, JSON body, status, code, field) for each kind of bad input."""
    image = b64(png_bytes(m, m))
    ok = {"prompt": "a red circle"}
    truncated = png_bytes(m, m)[:60]
    gen, edit = "/v1/images/generations", "/v1/images/edits"
    return [
        ("unknown field", gen, {**ok, "qualty": "hd"}, 400, "unknown_field", "qualty"),
        ("unknown model", gen, {**ok, "model": "dall-e-3"}, 404, "model_not_found", "model"),
        ("unknown quality", gen, {**ok, "quality": "best"}, 400, "invalid_value", "quality"),
        ("svg", gen, {**ok, "output_format": "svg"}, 400, "invalid_value", "output_format"),
        (
            "compression above 100",
            gen,
            {**ok, "output_compression": 101},
            400,
            "invalid_value",
            "output_compression",
        ),
        (
            "four partial images",
            gen,
            {**ok, "stream": True, "partial_images": 4},
            400,
            "invalid_value",
            "partial_images",
        ),
        ("missing prompt", gen, {"n": 1}, 400, "missing_field", "prompt"),
        ("n too large", gen, {**ok, "n": 9}, 400, "invalid_value", "n"),
        ("n zero", gen, {**ok, "n": 0}, 400, "invalid_value", "n"),
        ("steps too many", gen, {**ok, "steps": 1000}, 400, "invalid_value", "steps"),
        ("negative seed", gen, {**ok, "seed": -1}, 400, "invalid_value", "seed"),
        ("typical mass above 1", gen, {**ok, "typical_mass": 1.5}, 400, "invalid_value", "typical_mass"),
        ("temperature zero", gen, {**ok, "temperature": 0}, 400, "invalid_value", "temperature"),
        ("wrong type", gen, {**ok, "n": "many"}, 400, "invalid_value", "n"),
        ("size not WxH", gen, {**ok, "size": "big"}, 400, "invalid_value", "size"),
        ("size off the grid", gen, {**ok, "size": f"{m + 1}x{m}"}, 400, "invalid_size", "size"),
        ("size too small", gen, {**ok, "size": f"{m // 2}x{m}"}, 400, "invalid_size", "size"),
        ("size too large", gen, {**ok, "size": f"{64 * m}x{m}"}, 400, "invalid_size", "size"),
        (
            "unknown response format",
            gen,
            {**ok, "response_format": "png"},
            400,
            "invalid_value",
            "response_format",
        ),
        ("two images to edit", edit, {**ok, "image": [image, image]}, 400, "invalid_value", "image"),
        (
            "edit to a size off the grid",
            edit,
            {**ok, "image": image, "size": f"{m + 1}x{m}"},
            400,
            "invalid_size",
            "size",
        ),
        ("malformed base64", edit, {**ok, "image": "%%%not base64"}, 400, "invalid_value", "image"),
        ("non-image bytes", edit, {**ok, "image": b64(b"hello, world" * 10)}, 400, "invalid_image", "image"),
        ("truncated png", edit, {**ok, "image": b64(truncated)}, 400, "invalid_image", "image"),
        ("gif", edit, {**ok, "image": b64(_gif(m))}, 400, "invalid_image", "image"),
        (
            "decompression bomb",
            edit,
            {**ok, "image": b64(_bomb_png(60000, 60000))},
            413,
            "image_too_large",
            "image",
        ),
        (
            "too many pixels",
            edit,
            {**ok, "image": b64(_bomb_png(1024, 1024))},
            413,
            "image_too_large",
            "image",
        ),
        ("image off the grid", edit, {**ok, "image": b64(png_bytes(m + 3, m))}, 400, "invalid_size", "image"),
        (
            "mask of the wrong size",
            edit,
            {**ok, "image": image, "mask": b64(png_bytes(2 * m, m, "RGBA"))},
            400,
            "mask_size_mismatch",
            "mask",
        ),
        ("no mask, no alpha", edit, {**ok, "image": image}, 400, "mask_without_alpha", "image"),
        (
            "strength above 1",
            "/v1/images/structural-edits",
            {**ok, "image": image, "strength": 1.5},
            400,
            "invalid_value",
            "strength",
        ),
        ("no padding", "/v1/images/outpaints", {**ok, "image": image}, 400, "invalid_value", None),
        (
            "padding off the grid",
            "/v1/images/outpaints",
            {**ok, "image": image, "left": 3},
            400,
            "invalid_padding",
            "left",
        ),
        (
            "outpainted canvas off the grid",
            "/v1/images/outpaints",
            {**ok, "image": image, "left": m // 4},
            400,
            "invalid_size",
            "image",
        ),
        (
            "too many frames",
            "/v1/images/interpolations",
            {"start_prompt": "a", "end_prompt": "b", "frames": 17},
            400,
            "invalid_value",
            "frames",
        ),
        (
            "prompt and image at one end",
            "/v1/images/interpolations",
            {"start_prompt": "a", "start_image": image, "end_prompt": "b"},
            400,
            "invalid_value",
            None,
        ),
        ("no regions", "/v1/images/compositions", {"regions": []}, 400, "invalid_value", "regions"),
        (
            "empty box",
            "/v1/images/compositions",
            {"regions": [{"prompt": "a", "box": [0.5, 0, 0.5, 1]}]},
            400,
            "invalid_value",
            "regions.0",
        ),
        ("variations without image", "/v1/images/variations", {"n": 2}, 400, "missing_field", "image"),
    ]


def _gif(m: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (m, m)).save(buffer, format="GIF")
    return buffer.getvalue()


def test_bad_input_gets_the_error_shape_and_never_reaches_the_queue(
    client: httpx.Client, broker: CountingBroker, m: int
) -> None:
    before = broker.submitted
    for name, path, body, status, code, field in _bad_requests(m):
        error = assert_error_shape(client.post(path, json=body), status, code)
        assert error["param"] == field, name
    assert broker.submitted == before


def test_bad_multipart_uploads(client: httpx.Client, broker: CountingBroker, m: int) -> None:
    before = broker.submitted
    files = {"image": ("x.png", b"not an image at all", "image/png")}
    assert_error_shape(
        client.post("/v1/images/edits", data={"prompt": "a"}, files=files), 400, "invalid_image"
    )
    image = png_bytes(m, m)
    bad_mask = {
        "image": ("x.png", image, "image/png"),
        "mask": ("m.png", png_bytes(m, 2 * m, "RGBA"), "image/png"),
    }
    answer = client.post("/v1/images/edits", data={"prompt": "a"}, files=bad_mask)
    assert assert_error_shape(answer, 400, "mask_size_mismatch")["param"] == "mask"
    answer = client.post(
        "/v1/images/variations", data={"n": "12"}, files={"image": ("x.png", image, "image/png")}
    )
    assert assert_error_shape(answer, 400, "invalid_value")["param"] == "n"
    assert broker.submitted == before


def test_oversized_bodies_get_413(client: httpx.Client) -> None:
    big = b64(b"\0" * MAX_BODY)
    answer = client.post("/v1/images/edits", json={"prompt": "a", "image": big})
    assert_error_shape(answer, 413, "body_too_large")

    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "a", "image": "'
        for _ in range(MAX_BODY // 4096 + 2):
            yield b"A" * 4096
        yield b'"}'

    streamed = client.post("/v1/images/edits", content=chunks(), headers={"content-type": "application/json"})
    assert_error_shape(streamed, 413, "body_too_large")


def test_malformed_bodies_and_unknown_routes(client: httpx.Client) -> None:
    headers = {"content-type": "application/json"}
    assert_error_shape(client.post("/v1/images/generations", content=b"{not json", headers=headers), 400)
    assert_error_shape(
        client.post("/v1/images/edits", content=b"[1, 2]", headers=headers), 400, "invalid_json"
    )
    answer = client.post("/v1/images/edits", content=b"x", headers={"content-type": "text/plain"})
    assert_error_shape(answer, 415, "unsupported_media_type")
    assert_error_shape(client.get("/v1/nothing"), 404, "not_found")
    assert_error_shape(client.get("/v1/images/generations"), 405, "method_not_allowed")


def test_a_passed_deadline_gets_504(tiny_model_dir: Any, pipeline: Pipeline) -> None:
    settings = _settings(tiny_model_dir, request_timeout_s=0.001)
    with LiveServer(create_app(settings, pipeline=pipeline)) as live, live.client() as client:
        answer = client.post("/v1/images/generations", json={"prompt": "a red circle", "steps": 2})
        assert_error_shape(answer, 504, "deadline_exceeded")


class HeldPipeline:
    """A pipeline whose batches wait for `release`, so that admitted work stays in the queue."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.started, self.release = threading.Event(), threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipeline, name)

    def launch(self, draws: Any, previews: Any) -> Any:  # where the executor starts a batch
        self.started.set()
        self.release.wait(timeout=30)
        return self.pipeline.launch(draws, previews)


def test_a_full_queue_gets_503_with_retry_after_and_a_request_larger_than_it_413(
    tiny_model_dir: Any, pipeline: Pipeline
) -> None:
    held = HeldPipeline(pipeline)
    unit = 32 * 32 * 2 / (256 * 256 * 8)  # one 32x32 picture at 2 steps, in cost units
    settings = _settings(tiny_model_dir, max_queue_cost=2.5 * unit, retry_after_s=3)
    body = {"prompt": "a red circle", "size": "32x32", "steps": 2}
    with LiveServer(create_app(settings, pipeline=held)) as live, live.client() as client:  # type: ignore[arg-type]
        too_large = client.post("/v1/images/generations", json={**body, "n": 3})
        assert_error_shape(too_large, 413, "request_too_large")
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.post, "/v1/images/generations", json={**body, "n": 2})
            assert held.started.wait(timeout=30)  # two images admitted and in the worker's hands
            full = client.post("/v1/images/generations", json=body)
            assert_error_shape(full, 503, "queue_full")
            assert full.headers["retry-after"] == "3"  # no rate measured yet: the configured one
            assert 'paella_rejected_total{reason="queue_full"}' in client.get("/metrics").text
            held.release.set()
            assert first.result(timeout=30).status_code == 200
        assert client.post("/v1/images/generations", json=body).status_code == 200


def test_a_client_that_leaves_is_counted_and_its_job_never_computed(
    tiny_model_dir: Any, pipeline: Pipeline
) -> None:
    held = HeldPipeline(pipeline)
    seen: list[str] = []
    launch = held.launch

    def recording(draws: Any, previews: Any) -> Any:
        seen.extend(d.op.prompt for d in draws)
        return launch(draws, previews)

    held.launch = recording  # type: ignore[method-assign]
    settings = _settings(tiny_model_dir)
    body = {"size": "32x32", "steps": 1}
    with LiveServer(create_app(settings, pipeline=held)) as live, live.client() as client:  # type: ignore[arg-type]
        before = metric(client.get("/metrics").text, "paella_cancelled_total")
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(
                client.post, "/v1/images/generations", json={"prompt": "a red circle", **body}
            )
            assert held.started.wait(timeout=30)  # the worker is busy with the first request
            with pytest.raises(httpx.ReadTimeout), live.client(timeout_s=0.5) as impatient:
                impatient.post("/v1/images/generations", json={"prompt": "a blue square", **body})
            for _ in range(100):
                if metric(client.get("/metrics").text, "paella_cancelled_total") == before + 1:
                    break
                time.sleep(0.02)
            held.release.set()
            assert first.result(timeout=30).status_code == 200
        assert (
            client.post("/v1/images/generations", json={"prompt": "a green triangle", **body}).status_code
            == 200
        )
        assert metric(client.get("/metrics").text, "paella_cancelled_total") == before + 1
        assert "a blue square" not in seen and "a green triangle" in seen


class BrokenBroker(InProcessBroker):
    """A queue whose model listing fails unexpectedly."""

    async def models(self) -> list[ModelConfig]:
        raise RuntimeError("the listing broke")


def test_every_answer_has_a_request_id_and_unexpected_errors_are_500s_in_the_shape(
    tiny_model_dir: Any, pipeline: Pipeline
) -> None:
    broken = BrokenBroker(Admission(max_queue_cost=4, max_queue_wait_s=60))
    app = create_app(_settings(tiny_model_dir), pipeline=pipeline, broker=broken)
    with LiveServer(app, ready=False) as live, live.client() as client:
        answer = client.get("/v1/models", headers={"x-request-id": "client-id-7"})
        assert_error_shape(answer, 500, "internal_error")
        assert answer.headers["x-request-id"] == "client-id-7"
        fresh = client.get("/healthz", headers={"x-request-id": "not an id"})
        assert fresh.status_code == 200 and fresh.headers["x-request-id"].startswith("req_")
        assert fresh.headers["x-request-id"] != client.get("/healthz").headers["x-request-id"]
