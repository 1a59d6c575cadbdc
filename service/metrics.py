"""Every Prometheus metric of the service, defined once; names are the dashboard's contract.

With several processes (uvicorn/gunicorn workers, `paella api` beside `paella worker`), set
`PROMETHEUS_MULTIPROC_DIR` to an empty folder before any process starts: prometheus_client then
keeps values in files there and `render_metrics()` sums them across processes. Without it the
default in-process registry is served. `paella worker` has no HTTP app: it exposes the same
registry on its own port with `serve_metrics()`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
    multiprocess,
)

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
IMAGES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)

REQUESTS = Counter(
    "paella_requests", "HTTP requests answered, by endpoint and status", ["endpoint", "status"]
)
REQUEST_DURATION = Histogram(
    "paella_request_duration_seconds", "Time to answer a request", ["endpoint"], buckets=SECONDS
)
QUEUE_WAIT = Histogram(
    "paella_queue_wait_seconds", "Time from admission until a job's images enter a batch", buckets=SECONDS
)
BATCH_COMPUTE = Histogram("paella_batch_compute_seconds", "Executor time of one batch", buckets=SECONDS)
BATCH_STAGE = Histogram(
    "paella_batch_stage_seconds",
    "One batch's time by stage: prepare (host builds and launches the work), rows (the part of prepare "
    "that builds the rows: prompts and pictures encoded), device (waiting for the GPU), "
    "readback (pictures copied out), gpu (the GPU's own time on the batch, by CUDA events)",
    ["stage"],
    buckets=SECONDS,
)
GRAPH_EVENTS = Counter(
    "paella_cuda_graphs",
    "The fast path's CUDA graphs by event: captured (each capture stalls the work in flight), late (captured "
    "after warm-up, under traffic) and uncaptured (a network run for a setting warm-up did not meet, without "
    "a graph until the setting recurs)",
    ["event"],
)
BATCH_SIZE = Histogram("paella_batch_size", "Images per batch", buckets=IMAGES)
LOOP_LAG = Histogram(
    "paella_event_loop_lag_seconds",
    "How late the process's event loop runs a task due now (sampled every 100 ms): a busy loop delays "
    "every request it serves and, in `paella serve`, the GPU thread that shares its interpreter",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
GC_PAUSE = Histogram(
    "paella_gc_pause_seconds",
    "Pauses of the cyclic garbage collector, by generation (2: a full collection); every thread waits",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
)
IMAGES_GENERATED = Counter("paella_images_generated", "Images made and stored")
QUEUE_DEPTH = Gauge(
    "paella_queue_depth", "Images admitted and not yet answered", multiprocess_mode="livemostrecent"
)
REJECTED = Counter("paella_rejected", "Requests refused or dropped, by reason", ["reason"])
CANCELLED = Counter(
    "paella_cancelled", "Requests withdrawn because their client left before the answer (never computed)"
)
REDELIVERIES = Counter("paella_redeliveries", "Queue entries reclaimed from a dead or stuck worker")
DEAD_LETTERS = Counter(
    "paella_dead_letters", "Queue entries moved to the dead letters after too many deliveries"
)
WORKER_UP = Gauge("paella_worker_up", "Workers warmed up and running", multiprocess_mode="livesum")

_gpu_memory: Gauge | None = None


async def watch_event_loop(period_s: float = 0.1) -> None:
    """Sample `paella_event_loop_lag_seconds` until cancelled: how much later than asked a sleep ends."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period_s
        await asyncio.sleep(period_s)
        LOOP_LAG.observe(max(0.0, loop.time() - due))


def install_gpu_memory_gauge() -> bool:
    """Define `paella_gpu_memory_bytes` if torch is loaded and sees CUDA; False (no metric) otherwise.

    Never imports torch itself: a process without the model stays light.
    """
    global _gpu_memory
    torch: Any = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return False
    if _gpu_memory is None:
        _gpu_memory = Gauge(
            "paella_gpu_memory_bytes", "CUDA memory allocated by tensors", multiprocess_mode="livesum"
        )
        if not _multiprocess():
            _gpu_memory.set_function(lambda: _cuda_allocated(torch))
    refresh_gpu_memory()
    return True


def _cuda_allocated(torch: Any) -> float:
    """This process's tensor memory over every visible GPU (a worker may run on `cuda:1`)."""
    return float(sum(torch.cuda.memory_allocated(d) for d in range(torch.cuda.device_count())))


def refresh_gpu_memory() -> None:
    """Record CUDA memory now (needed in multiprocess mode, where callbacks are not collected)."""
    torch: Any = sys.modules.get("torch")
    if _gpu_memory is not None and torch is not None and _multiprocess():
        _gpu_memory.set(_cuda_allocated(torch))


def exposed_registry() -> CollectorRegistry:
    """The registry to expose: the process's own, or one summing all processes' files in multiprocess mode."""
    if not _multiprocess():
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def render_metrics() -> tuple[bytes, str]:
    """The exposition text and its content type, summed across processes in multiprocess mode."""
    return generate_latest(exposed_registry()), CONTENT_TYPE_LATEST


def serve_metrics(port: int, host: str, healthy: Callable[[], bool] = lambda: True) -> WSGIServer:
    """Serve `exposed_registry()` at /metrics and liveness at /healthz (503 once `healthy()` is False)
    over HTTP on `host:port` (0 = a free port), from a daemon thread.

    Returns the server: its `server_port` is the port bound; `shutdown()` stops it.
    """
    exposition = make_wsgi_app(exposed_registry())

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok = healthy()
            start_response(
                "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")]
            )
            return [b'{"status": "ok"}' if ok else b'{"status": "unhealthy"}']
        return exposition(environ, start_response)  # type: ignore[no-any-return]

    server = make_server(host, port, app, _Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="paella-metrics", daemon=True).start()
    return server


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def mark_process_dead(pid: int) -> None:
    """Drop a dead process's live gauges (gunicorn's `child_exit` hook); no-op without multiprocess mode."""
    if _multiprocess():
        multiprocess.mark_process_dead(pid)


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
