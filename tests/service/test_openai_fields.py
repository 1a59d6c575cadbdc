"""Every field the installed `openai` client can send to the image endpoints, sent at once as plain HTTP
(what `curl` would send): each is accepted, and honoured where the README's table says so. The field lists
come from the client's own signatures, so a client that learns a new field fails this test until the
service accepts it."""

from __future__ import annotations

import base64
import inspect
import io
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai.resources.images as images
import pytest
from PIL import Image

from service.app import create_app
from service.settings import Settings
from tests.service.live import LiveServer, png_bytes

REQUEST_OPTIONS = {"self", "extra_headers", "extra_query", "extra_body", "timeout"}
SVG = {"model": "an-svg-model", "reasoning": {"effort": "low"}}


def client_fields(method: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(method).parameters) - REQUEST_OPTIONS


@pytest.fixture(scope="module")
def client(tiny_model_dir: Any) -> Iterator[httpx.Client]:
    settings = Settings(weights=tiny_model_dir, device="cpu", max_wait_ms=5)
    with LiveServer(create_app(settings)) as live, live.client() as c:
        yield c


def test_a_generation_with_every_field_of_the_client(client: httpx.Client) -> None:
    body = {
        "prompt": "a red circle",
        "background": "transparent",
        "complexity": "high",
        "frame_count": 4,
        "frame_duration_ms": 100,
        "model": "tiny",
        "moderation": "low",
        "n": 2,
        "output_compression": 80,
        "output_format": "webp",
        "partial_images": 2,
        "quality": "low",
        "response_format": "url",
        "safety_identifier": "user-1",
        "size": "32x32",
        "stream": False,
        "style": "vivid",
        "svg": SVG,
        "user": "user-2",
    }
    assert set(body) == client_fields(images.Images.generate)
    answer = client.post("/v1/images/generations", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert (result["output_format"], result["size"], result["quality"]) == ("webp", "32x32", "low")
    assert (result["background"], result["safety_identifier"]) == ("opaque", "user-1")
    assert len(result["data"]) == 2
    for item in result["data"]:
        fetched = client.get(item["url"])
        assert fetched.headers["content-type"] == "image/webp"
        assert Image.open(io.BytesIO(fetched.content)).size == (32, 32)


def test_an_edit_and_a_variation_with_every_field_as_the_client_sends_them(client: httpx.Client) -> None:
    """Multipart, as the client writes it: a list of images as `image[]`, objects as `svg[model]`."""
    image, hole = png_bytes(32, 32), png_bytes(32, 32, "RGBA", (0, 0, 0, 0))
    form = {
        "prompt": "a blue square",
        "background": "opaque",
        "complexity": "low",
        "frame_count": "3",
        "frame_duration_ms": "50",
        "input_fidelity": "high",
        "model": "tiny",
        "n": "1",
        "output_compression": "70",
        "output_format": "jpeg",
        "partial_images": "1",
        "quality": "medium",
        "response_format": "b64_json",
        "safety_identifier": "",
        "size": "32x32",
        "stream": "false",
        "svg[model]": SVG["model"],
        "svg[reasoning][effort]": "low",
        "user": "user-2",
    }
    files = [
        ("image[]", ("image.png", image, "image/png")),
        ("mask", ("mask.png", hole, "image/png")),
        ("markup", ("markup.png", image, "image/png")),
    ]
    sent = {name.split("[", 1)[0] for name in form} | {name.split("[", 1)[0] for name, _ in files}
    assert sent == client_fields(images.Images.edit)
    answer = client.post("/v1/images/edits", data=form, files=files)
    assert answer.status_code == 200, answer.text
    assert answer.json()["safety_identifier"] == "user-2"  # an empty safety_identifier gives way to user
    (item,) = answer.json()["data"]
    assert Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))).format == "JPEG"

    form = {"model": "tiny", "n": "2", "response_format": "b64_json", "size": "32x32", "user": "user-3"}
    files = [("image", ("image.png", image, "image/png"))]
    assert set(form) | {"image"} == client_fields(images.Images.create_variation)
    answer = client.post("/v1/images/variations", data=form, files=files)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["data"]) == 2
