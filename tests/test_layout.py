"""The floor plan: model/ is the foundation, service/ and training/ stand beside each other on it, and the
HTTP side of the service never loads torch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("PAELLA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def imports(package: str) -> dict[str, set[str]]:
    """The modules each file of a package imports (absolute names; relative imports resolved)."""
    out = {}
    for file in sorted((REPO / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        out[str(file.relative_to(REPO))] = names
    return out


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{file} imports {name}"
        for file, names in imports(package).items()
        for name in sorted(names)
        if name.split(".")[0] in forbidden or name in forbidden
    ]


def test_model_imports_neither_wing_and_the_wings_not_each_other() -> None:
    assert offenders("model", ("service", "training", "fastapi", "redis", "starlette")) == []
    assert offenders("service", ("training",)) == []
    assert offenders("training", ("service",)) == []


def test_the_http_side_and_the_queue_import_no_torch_and_no_gpu_side() -> None:
    for package in ("service/http", "service/queue"):
        assert offenders(package, ("torch", "open_clip", "model.pipeline", "service.gpu")) == []


def test_paella_api_serves_without_importing_torch(tiny_model_dir: Path, redis_prefix: str) -> None:
    """The HTTP side alone, on Redis, takes uploads and queues jobs for the model a worker published (here by
    hand); it reads no weights, and torch stays out of the process."""
    script = f"""
import asyncio, base64, io, sys
import httpx
from PIL import Image
from model.folder import read_config
from service.app import create_app
from service.queue.redis_broker import RedisBroker
from service.settings import Settings

async def main():
    config = read_config({str(tiny_model_dir)!r})
    worker = RedisBroker({REDIS_URL!r}, prefix={redis_prefix!r}, model=config.name)
    await worker.announce(config)  # what a worker does once it is warm
    await worker.close()
    settings = Settings(weights="/nowhere", redis_url={REDIS_URL!r},
                        redis_stream_prefix={redis_prefix!r}, request_timeout_s=0.5)
    app = create_app(settings, run_worker=False)
    buffer = io.BytesIO()
    Image.new("RGBA", (32, 32)).save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for _ in range(100):
                if (await client.get("/v1/models")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            codes = [
                (await client.get("/v1/models")).status_code,
                (await client.post("/v1/images/edits", json={{"prompt": "a", "image": image}})).status_code,
                (await client.post("/v1/images/generations", json={{"prompt": "a", "n": 99}})).status_code,
            ]
    print(codes, "torch" in sys.modules, "open_clip" in sys.modules)

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    # the edit is queued and, with no worker, answered 504 at its deadline: it went all the way through
    assert done.stdout.split() == ["[200,", "504,", "400]", "False", "False"], done.stdout + done.stderr


@pytest.mark.parametrize("folder", ["model", "service", "training"])
def test_no_file_passes_400_lines(folder: str) -> None:
    long = {str(f): n for f in (REPO / folder).rglob("*.py") if (n := len(f.read_text().splitlines())) > 400}
    assert long == {}
