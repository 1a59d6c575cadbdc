"""The playground's files through the app: the page, its scripts and styles, nothing from elsewhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.http.playground import STATIC
from service.settings import Settings
from tests.service.live import LiveServer, assert_error_shape


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path) -> Iterator[httpx.Client]:
    settings = Settings(weights=tiny_model_dir, device="cpu")
    with LiveServer(create_app(settings), ready=False) as live, live.client() as c:
        yield c


def test_the_page_and_every_file_it_loads(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    loaded = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    imported = {
        f"/static/{m}"
        for file in STATIC.glob("*.js")
        for m in re.findall(r'from "\./([^"]+)"', file.read_text())
    }
    assert {"/static/app.js", "/static/style.css"} <= set(loaded)
    assert imported == {"/static/api.js", "/static/editor.js", "/static/gallery.js", "/static/regions.js"}
    types = {".js": "text/javascript", ".css": "text/css"}
    for path in {*loaded, *imported}:
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith(types[Path(path).suffix]), path
        assert answer.content == (STATIC / Path(path).name).read_bytes()


def test_nothing_is_fetched_from_elsewhere() -> None:
    for file in STATIC.iterdir():
        assert not re.search(r"https?:|//[a-z]", file.read_text()), file.name


@pytest.mark.parametrize("name", ["nope.js", "..%2Fplayground.py", "%2E%2E%2F%2E%2E%2Fapp.py"])
def test_other_files_are_not_served(client: httpx.Client, name: str) -> None:
    assert_error_shape(client.get(f"/static/{name}"), 404, "not_found")


def test_the_playground_stays_out_of_the_api_schema(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)
