"""Every image endpoint through real HTTP with a tiny random model: sizes, seeds, batching."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from model.pipeline import Pipeline
from service.app import create_app
from service.http.routes import IMAGE_ROUTES, ImageRoute
from service.settings import Settings
from tests.service.live import LiveServer, b64, decoded_pngs, metric, png_bytes


@pytest.fixture(scope="module")
def server(tiny_model_dir: Any) -> Iterator[LiveServer]:
    pipeline = Pipeline.from_folder(tiny_model_dir)
    settings = Settings(weights=tiny_model_dir, device="cpu", max_batch_size=8, max_wait_ms=30)
    with LiveServer(create_app(settings, pipeline=pipeline)) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def grid(client: httpx.Client) -> tuple[int, int]:
    """The model's native canvas and its least side (twice the size multiple), from /v1/models."""
    card = client.get("/v1/models").json()["data"][0]
    return card["image_size"], 2 * card["size_multiple"]


def _requests(native: int, m: int) -> list[tuple[str, dict[str, Any], tuple[int, int], int]]:
    """(path, JSON body, expected image size, expected image count) for every endpoint."""
    image = b64(png_bytes(2 * m, m))
    hole = b64(png_bytes(2 * m, m, "RGBA", (0, 0, 0, 0)))
    knobs = {"steps": 2, "seed": 7}
    return [
        (
            "/v1/images/generations",
            {"prompt": "a red circle", "n": 2, "size": f"{2 * m}x{m}", **knobs},
            (2 * m, m),
            2,
        ),
        ("/v1/images/generations", {"prompt": "a red circle", **knobs}, (native, native), 1),
        (
            "/v1/images/edits",
            {"image": image, "mask": hole, "prompt": "a blue square", **knobs},
            (2 * m, m),
            1,
        ),
        ("/v1/images/edits", {"image": hole, "prompt": "a blue square", "n": 2, **knobs}, (2 * m, m), 2),
        (
            "/v1/images/outpaints",
            {"image": image, "prompt": "more", "left": m, "down": m, **knobs},
            (3 * m, 2 * m),
            1,
        ),
        ("/v1/images/variations", {"image": image, "n": 3, "size": f"{m}x{m}", **knobs}, (m, m), 3),
        (
            "/v1/images/interpolations",
            {
                "start_prompt": "a red circle",
                "end_image": image,
                "frames": 3,
                "size": f"{m}x{2 * m}",
                **knobs,
            },
            (m, 2 * m),
            3,
        ),
        (
            "/v1/images/compositions",
            {
                "regions": [
                    {"prompt": "a red circle", "box": [0, 0, 0.5, 1]},
                    {"prompt": "a blue square", "box": [0.5, 0, 1, 1], "weight": 2},
                ],
                "size": f"{2 * m}x{m}",
                **knobs,
            },
            (2 * m, m),
            1,
        ),
        (
            "/v1/images/compositions",
            {"regions": [{"prompt": "a"}, {"prompt": "b"}], **knobs},
            (native, native),
            1,
        ),
        (
            "/v1/images/structural-edits",
            {"image": image, "prompt": "a green triangle", "strength": 0.4, "n": 2, **knobs},
            (2 * m, m),
            2,
        ),
    ]


def test_every_endpoint_answers_pngs_of_the_requested_size(
    client: httpx.Client, grid: tuple[int, int]
) -> None:
    native, m = grid
    for path, body, size, count in _requests(native, m):
        answer = client.post(path, json=body)
        images = decoded_pngs(answer)
        assert [im.size for im in images] == [size] * count, path
        seeds = [item["seed"] for item in answer.json()["data"]]
        expected = [7] * count if path.endswith("interpolations") else [7 + i for i in range(count)]
        assert seeds == expected, path
        assert isinstance(answer.json()["created"], int)


def test_multipart_uploads_work_like_json(client: httpx.Client, grid: tuple[int, int]) -> None:
    _, m = grid
    image, hole = png_bytes(m, m), png_bytes(m, m, "RGBA", (0, 0, 0, 0))
    form = {"prompt": "a blue square", "steps": "2", "seed": "3"}
    files = {"image": ("image.png", image, "image/png"), "mask": ("mask.png", hole, "image/png")}
    by_form = client.post("/v1/images/edits", data=form, files=files)
    by_json = client.post("/v1/images/edits", json={**form, "image": b64(image), "mask": b64(hole)})
    assert [im.size for im in decoded_pngs(by_form)] == [(m, m)]
    assert by_form.json()["data"] == by_json.json()["data"]


@pytest.mark.parametrize("route", IMAGE_ROUTES, ids=lambda r: r.path.rsplit("/", 1)[-1])
def test_every_endpoint_answers_the_png_itself_for_one_image_with_accept_png(
    client: httpx.Client, grid: tuple[int, int], route: ImageRoute
) -> None:
    native, m = grid
    path, body, _, _ = next(r for r in _requests(native, m) if r[0] == route.path)
    body = {**body, "n": 1} if "n" in body else body
    raw = client.post(path, json=body, headers={"Accept": "image/png"})
    as_json = client.post(path, json=body)
    if path.endswith("interpolations"):  # at least two frames: always the JSON list
        assert (
            raw.headers["content-type"] == "application/json" and raw.json()["data"] == as_json.json()["data"]
        )
        return
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    assert raw.headers["x-paella-seed"] == "7"
    assert base64.b64decode(as_json.json()["data"][0]["b64_json"]) == raw.content


def test_without_a_seed_each_image_gets_its_own_random_seed(
    client: httpx.Client, grid: tuple[int, int]
) -> None:
    _, m = grid
    body = {"prompt": "a red circle", "size": f"{m}x{m}", "steps": 2, "n": 3}
    first = client.post("/v1/images/generations", json=body).json()["data"]
    second = client.post("/v1/images/generations", json=body).json()["data"]
    seeds = [d["seed"] for d in first + second]
    assert len(set(seeds)) == 6
    again = client.post("/v1/images/generations", json={**body, "n": 1, "seed": first[1]["seed"]})
    assert again.json()["data"][0]["b64_json"] == first[1]["b64_json"]


async def _post_all(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return await asyncio.gather(*(client.post("/v1/images/generations", json=b) for b in bodies))


def test_same_seed_same_bytes_alone_and_under_concurrent_load(
    server: LiveServer, client: httpx.Client, grid: tuple[int, int]
) -> None:
    _, m = grid
    bodies = [{"prompt": "a red circle", "size": f"{m}x{m}", "steps": 2, "seed": 100 + i} for i in range(16)]
    together = asyncio.run(_post_all(server.url, bodies))
    for body, answer in zip(bodies, together, strict=True):
        alone = client.post("/v1/images/generations", json=body)
        assert answer.status_code == alone.status_code == 200
        assert answer.json()["data"] == alone.json()["data"]
    distinct = {a.json()["data"][0]["b64_json"] for a in together}
    assert len(distinct) >= 12  # a tiny random model on a 4 x 4 grid may draw the same image twice


def test_concurrent_requests_form_batches(
    server: LiveServer, client: httpx.Client, grid: tuple[int, int]
) -> None:
    _, m = grid
    before = client.get("/metrics").text
    bodies = [{"prompt": "a blue square", "size": f"{m}x{m}", "steps": 2, "seed": i} for i in range(32)]
    answers = asyncio.run(_post_all(server.url, bodies))
    assert all(a.status_code == 200 for a in answers)
    after = client.get("/metrics").text
    batches = metric(after, "paella_batch_size_count") - metric(before, "paella_batch_size_count")
    images = metric(after, "paella_batch_size_sum") - metric(before, "paella_batch_size_sum")
    assert images == 32
    assert 4 <= batches < 32
    ok = 'endpoint="/v1/images/generations",status="200"'
    assert metric(after, "paella_requests_total", ok) - metric(before, "paella_requests_total", ok) == 32


async def _post_mixed(url: str, requests: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return await asyncio.gather(*(client.post(path, json=body) for path, body in requests))


def test_mixed_operations_and_settings_share_batches_and_draw_what_they_draw_alone(
    server: LiveServer, client: httpx.Client, grid: tuple[int, int]
) -> None:
    """Generations at several guidance scales and temperatures, an edit, a variation, an outpainting and a
    structural edit of one canvas: batched together, each answers the bytes it answers alone."""
    _, m = grid
    image, hole = b64(png_bytes(m, m)), b64(png_bytes(m, m, "RGBA", (0, 0, 0, 0)))
    size, knobs = f"{m}x{m}", {"steps": 3}
    requests: list[tuple[str, dict[str, Any]]] = [
        *(
            (
                "/v1/images/generations",
                {"prompt": "a red circle", "size": size, "seed": i, "guidance_scale": g, **knobs},
            )
            for i, g in enumerate((3.0, 5.0, -1.0, 7.0))
        ),
        (
            "/v1/images/generations",
            {"prompt": "a blue square", "size": size, "seed": 9, "temperature": 0.7, **knobs},
        ),
        ("/v1/images/edits", {"prompt": "a blue square", "image": image, "mask": hole, "seed": 10, **knobs}),
        ("/v1/images/variations", {"image": image, "size": size, "seed": 11, "typical_mass": 0, **knobs}),
        (
            "/v1/images/outpaints",
            {"prompt": "more", "image": b64(png_bytes(m, m // 2)), "down": m // 2, "seed": 12, **knobs},
        ),
        (
            "/v1/images/structural-edits",
            {"prompt": "a red circle", "image": image, "strength": 0.5, "seed": 13, **knobs},
        ),
    ]
    before = client.get("/metrics").text
    together = asyncio.run(_post_mixed(server.url, requests))
    after = client.get("/metrics").text
    batches = metric(after, "paella_batch_size_count") - metric(before, "paella_batch_size_count")
    assert 1 <= batches < len(requests) / 2  # nine requests of one canvas and step count: a batch or two
    for (path, body), answer in zip(requests, together, strict=True):
        alone = client.post(path, json=body)
        assert answer.status_code == alone.status_code == 200, path
        assert answer.json()["data"] == alone.json()["data"], path
