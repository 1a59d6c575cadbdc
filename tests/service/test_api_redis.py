"""`paella api` and `paella worker` on a real Redis: the HTTP side without the model, the GPU side apart."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from model.pipeline import Pipeline
from service.app import create_app, make_broker, make_worker
from service.settings import Settings
from tests.service.live import LiveServer, assert_error_shape, b64, decoded_pngs, metric, png_bytes

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("PAELLA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


class WorkerThread:
    """`paella worker`'s loop in a background thread, stopped like SIGTERM would stop it."""

    def __init__(self, settings: Settings, pipeline: Pipeline) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.started = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)

    async def _run(self) -> None:
        broker = make_broker(self.settings, self.pipeline.config.name)
        worker = make_worker(self.settings, broker, self.pipeline)
        self.loop, self.worker = asyncio.get_running_loop(), worker
        self.started.set()
        try:
            await worker.run()
        finally:
            await broker.close()

    def __enter__(self) -> WorkerThread:
        self.thread.start()
        self.started.wait(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.worker.stop)
        self.thread.join(timeout=30)


@pytest.fixture
def settings(tiny_model_dir: Path) -> Iterator[Settings]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as e:  # pragma: no cover - a Redis test fails without Redis
        pytest.fail(f"no Redis at {REDIS_URL}: {e} (scripts/ensure-redis.sh starts one)")
    prefix = f"test-api-{uuid.uuid4().hex[:10]}"
    yield Settings(weights=tiny_model_dir, device="cpu", redis_url=REDIS_URL, redis_stream_prefix=prefix)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_api_and_worker_apart_on_redis(settings: Settings, tiny_model_dir: Path) -> None:
    pipeline = Pipeline.from_folder(tiny_model_dir)
    no_weights = settings.model_copy(update={"weights": Path("/nowhere")})
    api = create_app(no_weights, run_worker=False)  # no weights: it learns the model from the worker
    with WorkerThread(settings, pipeline), LiveServer(api) as live, live.client() as client:
        m = 2 * client.get("/v1/models").json()["data"][0]["size_multiple"]
        body = {"prompt": "a red circle", "n": 2, "size": f"{2 * m}x{m}", "steps": 2, "seed": 5}
        first = client.post("/v1/images/generations", json=body)
        assert [im.size for im in decoded_pngs(first)] == [(2 * m, m)] * 2
        assert [d["seed"] for d in first.json()["data"]] == [5, 6]
        again = client.post("/v1/images/generations", json={**body, "n": 1, "seed": 6})
        assert again.json()["data"][0] == first.json()["data"][1]

        hole = png_bytes(m, m, "RGBA", (0, 0, 0, 0))
        files = {"image": ("hole.png", hole, "image/png")}
        edit = client.post("/v1/images/edits", data={"prompt": "a blue square", "steps": "2"}, files=files)
        assert [im.size for im in decoded_pngs(edit)] == [(m, m)]
        frames = client.post(
            "/v1/images/interpolations",
            json={
                "start_image": b64(png_bytes(m, m)),
                "end_prompt": "a blue square",
                "frames": 3,
                "steps": 2,
            },
        )
        assert len(decoded_pngs(frames)) == 3


def test_api_without_a_worker_is_not_ready_and_serves_no_model(settings: Settings) -> None:
    with LiveServer(create_app(settings, run_worker=False), ready=False) as live, live.client() as client:
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["error"] == {
            "message": "no worker is alive",
            "type": "server_error",
            "param": None,
            "code": "not_ready",
        }
        assert client.get("/v1/models").json() == {"object": "list", "data": []}
        answer = client.post("/v1/images/generations", json={"prompt": "a red circle"})
        assert_error_shape(answer, 503, "not_ready")
        named = client.post("/v1/images/generations", json={"prompt": "a red circle", "model": "tiny"})
        assert assert_error_shape(named, 404, "model_not_found")["param"] == "model"


def test_api_is_not_ready_while_redis_is_unreachable(settings: Settings) -> None:
    nowhere = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with LiveServer(create_app(nowhere, run_worker=False), ready=False) as live, live.client() as client:
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "not_ready"
        assert client.get("/healthz").status_code == 200


def test_metrics_read_the_shared_queue_depth_at_scrape_time(settings: Settings) -> None:
    api = create_app(settings, run_worker=False)
    client = redis.Redis.from_url(REDIS_URL)
    with LiveServer(api, ready=False) as live, live.client() as http:
        prefix = settings.redis_stream_prefix
        client.sadd(f"{prefix}:queues", "a", "b")
        client.set(f"{prefix}:depth:a", 3)  # as other API processes would leave the queues of two models
        client.set(f"{prefix}:depth:b", 2)
        assert metric(http.get("/metrics").text, "paella_queue_depth") == 5
        client.set(f"{prefix}:depth:a", 0)  # ... and the workers drain them
        client.set(f"{prefix}:depth:b", 0)
        assert metric(http.get("/metrics").text, "paella_queue_depth") == 0
    client.close()
