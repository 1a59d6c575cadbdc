"""The official `openai` package against a running service, as a user would point it at one: `paella serve`
embedded, and on Redis a `paella api` process without weights in front of two `paella worker` processes,
each serving its own model from its own queue."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import openai
import pytest
import redis
from PIL import Image

from model.config import Knobs, SamplerConfig
from model.ops import Draw, Generate
from model.pipeline import Pipeline
from model.weights import write_random_folder
from service.app import create_app
from service.gpu.executor import encode
from service.settings import Settings
from tests.conftest import tiny_model_config, tiny_vocabulary
from tests.service.live import LiveServer, png_bytes
from tests.service.test_cli import free_port

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("PAELLA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
SECOND = "tiny-wide"  # a second model, on Redis only: another native canvas, other weights and defaults
PROMPT = "a red circle"


class Service(NamedTuple):
    url: str
    models: dict[str, Path]  # the weight folder of each model served
    openai_client: openai.OpenAI  # one for all the module's tests, closed with the service

    def client(self) -> openai.OpenAI:
        return self.openai_client


def openai_client(url: str) -> openai.OpenAI:
    """The OpenAI SDK's client of the service at `url` (a client per test left sockets for the garbage
    collector, whose ResourceWarning then failed whichever test it fell in)."""
    return openai.OpenAI(base_url=f"{url}/v1", api_key="not-checked", timeout=120)


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sampler = SamplerConfig(steps=3, guidance_scale=1.0)
    config = dataclasses.replace(tiny_model_config(), name=SECOND, image_size=64, sampler=sampler)
    return write_random_folder(tmp_path_factory.mktemp(SECOND), config, tiny_vocabulary(), seed=1)


@contextlib.contextmanager
def on_redis(models: dict[str, Path]) -> Iterator[Service]:
    """`paella api` (weights: none) and one `paella worker` per model, on a fresh key prefix."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as e:  # pragma: no cover - a Redis test fails without Redis
        pytest.fail(f"no Redis at {REDIS_URL}: {e} (scripts/ensure-redis.sh starts one)")
    prefix, port = f"test-openai-{uuid.uuid4().hex[:10]}", free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        PAELLA_REDIS_URL=REDIS_URL,
        PAELLA_REDIS_STREAM_PREFIX=prefix,
        PAELLA_DEVICE="cpu",
        PAELLA_HOST="127.0.0.1",
        PAELLA_PORT=str(port),
        PAELLA_METRICS_PORT="0",
        PAELLA_MAX_WAIT_MS="5",
        PAELLA_LOG_LEVEL="warning",
    )

    def paella(command: str, weights: Path) -> subprocess.Popen[bytes]:
        code = f"from service.cli import main; main([{command!r}])"
        return subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO, env={**env, "PAELLA_WEIGHTS": str(weights)}
        )

    processes = [paella("api", Path("/nowhere"))] + [paella("worker", path) for path in models.values()]
    url = f"http://127.0.0.1:{port}"
    service = Service(url, models, openai_client(url))
    try:
        deadline, served = time.monotonic() + 120, set()
        while served != set(models) and time.monotonic() < deadline:
            assert all(p.poll() is None for p in processes), "a paella process exited"
            with contextlib.suppress(httpx.TransportError):
                served = {m["id"] for m in httpx.get(f"{service.url}/v1/models").json()["data"]}
            time.sleep(0.1)
        assert served == set(models), served
        yield service
    finally:
        service.openai_client.close()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="module", params=["embedded", "redis"])
def service(
    request: pytest.FixtureRequest, tiny_model_dir: Path, second_model_dir: Path
) -> Iterator[Service]:
    if request.param == "redis":
        with on_redis({"tiny": tiny_model_dir, SECOND: second_model_dir}) as on:
            yield on
        return
    settings = Settings(weights=tiny_model_dir, device="cpu", max_wait_ms=5)
    with LiveServer(create_app(settings)) as live, openai_client(live.url) as client:
        yield Service(live.url, {"tiny": tiny_model_dir}, client)


def expected_png(folder: Path, size: int, seed: int, steps: int) -> bytes:
    """What the model of `folder` draws for PROMPT at `seed`, computed here, as the service encodes it."""
    pipeline = Pipeline.from_folder(folder)
    sampler = pipeline.config.sampler.with_knobs(Knobs(steps=steps))
    return encode(pipeline.images([Draw(Generate(PROMPT, size, size), seed, sampler)])[0])


def decoded(b64_json: str | None) -> Image.Image:
    assert b64_json is not None
    image = Image.open(io.BytesIO(base64.b64decode(b64_json)))
    image.load()
    return image


def test_models_list_and_retrieve(service: Service) -> None:
    client = service.client()
    assert sorted(m.id for m in client.models.list()) == sorted(service.models)
    card = client.models.retrieve("tiny")
    assert (card.id, card.object, card.owned_by) == ("tiny", "model", "paella-serve")
    extra = card.model_extra or {}
    assert (extra["image_size"], extra["size_multiple"], extra["sampler"]["steps"]) == (32, 16, 4)
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("dall-e-3")
    assert (info.value.code, info.value.param, info.value.type) == (
        "model_not_found",
        "model",
        "invalid_request_error",
    )


def test_generate_answers_base64_or_a_link_to_the_same_image_of_the_model_named(service: Service) -> None:
    client = service.client()
    for name, folder in service.models.items():
        native = int(client.models.retrieve(name).model_extra["image_size"])  # type: ignore[index]
        as_b64 = client.images.generate(
            model=name,
            prompt=PROMPT,
            size="auto",
            response_format="b64_json",
            extra_body={"seed": 5, "steps": 2},
        )
        assert (as_b64.size, as_b64.output_format, as_b64.background) == (
            f"{native}x{native}",
            "png",
            "opaque",
        )
        assert as_b64.data is not None and as_b64.data[0].url is None
        png = base64.b64decode(as_b64.data[0].b64_json or "")
        assert png == expected_png(folder, native, seed=5, steps=2)  # the named model's own image
        as_url = client.images.generate(
            model=name, prompt=PROMPT, response_format="url", extra_body={"seed": 5, "steps": 2}
        )
        assert as_url.data is not None and as_url.data[0].b64_json is None and as_url.data[0].url
        fetched = httpx.get(as_url.data[0].url)
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
        assert fetched.content == png
    gone = httpx.get(f"{service.url}/v1/images/files/{'x' * 32}.png")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "image_not_found"


def test_edit_at_a_size_and_variations(service: Service) -> None:
    client = service.client()
    hole = png_bytes(64, 64, "RGBA", (0, 0, 0, 0))
    edited = client.images.edit(
        model="tiny",
        image=("hole.png", hole, "image/png"),
        prompt="a blue square",
        size="32x32",
        extra_body={"steps": 2, "seed": 3},
    )
    assert edited.data is not None and [decoded(d.b64_json).size for d in edited.data] == [(32, 32)]
    with pytest.warns(DeprecationWarning):  # OpenAI retired the endpoint; Paella keeps it
        varied = client.images.create_variation(
            model="tiny", image=("in.png", png_bytes(32, 32), "image/png"), n=2, size="32x32"
        )
    assert varied.data is not None and [decoded(d.b64_json).size for d in varied.data] == [(32, 32)] * 2


def test_streaming_yields_partial_images_then_the_image_it_answers_without_streaming(
    service: Service,
) -> None:
    client = service.client()
    knobs = {"seed": 9, "steps": 4}
    events = list(
        client.images.generate(model="tiny", prompt=PROMPT, stream=True, partial_images=2, extra_body=knobs)
    )
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [getattr(e, "partial_image_index", None) for e in events] == [0, 1, None]
    assert all(decoded(e.b64_json).size == (32, 32) for e in events)
    plain = client.images.generate(model="tiny", prompt=PROMPT, extra_body=knobs)
    assert plain.data is not None and events[-1].b64_json == plain.data[0].b64_json

    hole = png_bytes(32, 32, "RGBA", (0, 0, 0, 0))
    edits = list(
        client.images.edit(
            image=("hole.png", hole, "image/png"),
            prompt="a blue square",
            stream=True,
            partial_images=1,
            extra_body=knobs,
        )
    )
    assert [e.type for e in edits] == ["image_edit.partial_image", "image_edit.completed"]


def test_errors_carry_param_and_type_and_are_not_retried(service: Service) -> None:
    client = service.client()
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(prompt=PROMPT, n=99, extra_headers={"x-request-id": "mine-42"})
    error = info.value
    assert (error.param, error.type, error.code) == ("n", "invalid_request_error", "invalid_value")
    assert error.response.headers["x-request-id"] == "mine-42"
    assert error.response.headers["x-should-retry"] == "false"


def test_output_formats_and_quality(service: Service) -> None:
    client = service.client()
    jpeg = client.images.generate(
        prompt=PROMPT, output_format="jpeg", output_compression=50, extra_body={"steps": 2}
    )
    webp = client.images.generate(prompt=PROMPT, output_format="webp", extra_body={"steps": 2})
    assert jpeg.data is not None and webp.data is not None
    assert decoded(jpeg.data[0].b64_json).format == "JPEG" and decoded(webp.data[0].b64_json).format == "WEBP"
    low = client.images.generate(prompt=PROMPT, quality="low", extra_body={"seed": 4})  # half the 4 steps
    two = client.images.generate(prompt=PROMPT, extra_body={"seed": 4, "steps": 2})
    assert low.data is not None and two.data is not None and low.data[0].b64_json == two.data[0].b64_json
    assert low.quality == "low"
