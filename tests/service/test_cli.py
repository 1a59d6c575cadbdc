"""`paella worker` as a real process on a real Redis: its own /metrics on `PAELLA_METRICS_PORT`."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from service.settings import Settings
from tests.service.live import metric

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("PAELLA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_workers_on_one_host_get_a_metrics_port_each_from_their_gpu() -> None:
    assert [
        Settings(device=d).worker_metrics_port() for d in ("cpu", "auto", "cuda", "cuda:0", "cuda:3")
    ] == [
        9100,
        9100,
        9100,
        9100,
        9103,
    ]
    assert Settings(device="cuda:3", metrics_port=9200).worker_metrics_port() == 9200
    assert Settings(metrics_port=0).worker_metrics_port() == 0  # off


@pytest.mark.redis
def test_worker_serves_its_metrics_on_its_own_port(tiny_model_dir: Path) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as e:  # pragma: no cover - a Redis test fails without Redis
        pytest.fail(f"no Redis at {REDIS_URL}: {e} (scripts/ensure-redis.sh starts one)")
    prefix, port = f"test-cli-{uuid.uuid4().hex[:10]}", free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        PAELLA_WEIGHTS=str(tiny_model_dir),
        PAELLA_DEVICE="cpu",
        PAELLA_MAX_BATCH_SIZE="1",
        PAELLA_REDIS_URL=REDIS_URL,
        PAELLA_REDIS_STREAM_PREFIX=prefix,
        PAELLA_HOST="127.0.0.1",
        PAELLA_METRICS_PORT=str(port),
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", "from service.cli import main; main(['worker'])"], cwd=REPO, env=env
    )
    try:
        up, deadline = 0.0, time.monotonic() + 60
        while up != 1.0 and time.monotonic() < deadline and worker.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                assert answer.status_code == 200
                assert answer.headers["content-type"].startswith("text/plain")
                up = metric(answer.text, "paella_worker_up")
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        assert up == 1.0, "the worker's metrics never showed paella_worker_up 1"
        assert "# TYPE paella_batch_size histogram" in answer.text
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.mark.slow
def serve(**settings: str) -> tuple[subprocess.Popen[bytes], str]:
    """`paella serve` on the CPU with `settings` (PAELLA_* names), once /readyz answers 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(PAELLA_DEVICE="cpu", PAELLA_HOST="127.0.0.1", PAELLA_PORT=str(port), **settings)
    server = subprocess.Popen([sys.executable, "-m", "service", "serve"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return server, url


def test_paella_serve_keeps_idle_connections_open_for_the_keep_alive_setting() -> None:
    server, url = serve(PAELLA_KEEP_ALIVE_S="2")
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)

    def healthz() -> int:
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        answer.read()
        return answer.status

    try:
        assert healthz() == 200
        sock = conn.sock
        time.sleep(1.0)  # idle, within the setting: the same connection serves the next request
        assert healthz() == 200 and conn.sock is sock
        time.sleep(3.0)  # idle past it: the server has closed the connection
        assert sock.recv(1) == b""
    finally:
        conn.close()
        server.terminate()
        server.wait(timeout=30)


def test_sigterm_drains_paella_serve_readiness_first_then_in_flight_work_then_exit() -> None:
    server, url = serve(PAELLA_DRAIN_S="1.5")
    try:
        with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(1) as pool:
            body = {"prompt": "a large red circle in the center on a blue background", "n": 4, "steps": 8}
            in_flight = pool.submit(client.post, "/v1/images/generations", json=body)
            time.sleep(0.3)
            server.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert client.get("/readyz").status_code == 503  # load balancers hear first
            assert client.get("/healthz").status_code == 200  # ... while it still serves
            answer = in_flight.result(timeout=60)
            assert answer.status_code == 200 and len(answer.json()["data"]) == 4
        assert server.wait(timeout=30) is not None
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
