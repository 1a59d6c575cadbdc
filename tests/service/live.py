"""A real uvicorn server on a free 127.0.0.1 port, in a background thread, for the HTTP tests."""

from __future__ import annotations

import base64
import io
import re
import socket
import threading
import time
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from PIL import Image


class LiveServer:
    """Serves `app` for the span of a `with` block; `ready=True` waits for /readyz to answer 200, else for
    the server to answer at all."""

    def __init__(self, app: FastAPI, *, ready: bool = True, timeout_s: float = 60.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.wait_ready = ready
        self.timeout_s = timeout_s

    def __enter__(self) -> LiveServer:
        self.thread.start()
        path = "/readyz" if self.wait_ready else "/healthz"
        deadline = time.monotonic() + self.timeout_s
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.monotonic() < deadline:
                try:
                    if client.get(path).status_code == 200 or not self.wait_ready:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        raise TimeoutError(f"the server did not answer {path} within {self.timeout_s} s")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def client(self, timeout_s: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout_s)


def png_bytes(width: int, height: int, mode: str = "RGB", color: Any = None) -> bytes:
    image = Image.new(mode, (width, height), color if color is not None else (90, 160, 40, 255)[: len(mode)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decoded_pngs(answer: httpx.Response) -> list[Image.Image]:
    """The images of an `ImagesResponse`, checked to be PNGs that decode."""
    assert answer.status_code == 200, answer.text
    images: list[Image.Image] = []
    for item in answer.json()["data"]:
        data = base64.b64decode(item["b64_json"])
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        image = Image.open(io.BytesIO(data))
        image.load()
        images.append(image)
    return images


def metric(text: str, name: str, labels: str = "") -> float:
    """A sample's value in Prometheus exposition text (0 when absent)."""
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match[1]) if match else 0.0


def assert_error_shape(answer: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The one error shape: {"error": {"code", "message", "field"}} and nothing else."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "field"}
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return dict(error)
