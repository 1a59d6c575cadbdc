"""`create_app()`: the one place that wires the three sides. The lifespan loads the model once, owns the
queue, the image store and, in `paella serve`, the GPU worker; the HTTP side alone (`paella api`) never
imports torch and reads no weights: it learns the models from the workers, through the queue."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, cast

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service import heap, metrics
from service.http.access import Access
from service.http.errors import install_error_handlers
from service.http.image_store import ImageStore, MemoryImageStore, RedisImageStore
from service.http.limits import Limits
from service.http.middleware import BodyLimit, RequestId, RequestMetrics
from service.http.playground import router as playground
from service.http.routes import router
from service.queue.admission import Admission
from service.queue.broker import Broker, WorkQueue
from service.queue.inprocess import InProcessBroker
from service.runtime import Runtime
from service.settings import Settings

if TYPE_CHECKING:
    from model.pipeline import Pipeline
    from service.gpu.worker import Worker

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005  # the interpreter's switch interval in a process that runs a GPU worker


def load_pipeline(settings: Settings) -> Pipeline:
    """The model from the weight folder, resident on the configured device."""
    import torch

    from model.pipeline import Pipeline

    device = settings.torch_device()
    dtype = getattr(torch, settings.torch_dtype())
    pipeline = Pipeline.from_folder(settings.weights, device=device, dtype=dtype)
    if settings.fast_path and pipeline.device.type == "cuda":  # on a CPU, eager PyTorch is the fast path
        pipeline.accelerate(compile=settings.compile)
    return pipeline


def make_broker(settings: Settings, model: str | None = None) -> Broker:
    """Redis Streams when `redis_url` is set (taking jobs for `model` on the worker side), else the
    in-process queue."""
    if settings.redis_url is None:
        admission = Admission(settings.max_queue_cost, settings.max_queue_wait_s, settings.retry_after_s)
        return InProcessBroker(admission)
    from service.queue.redis_broker import RedisBroker

    return RedisBroker.from_settings(settings, model=model)


def make_image_store(settings: Settings) -> ImageStore:
    """Where URL answers wait: Redis when `redis_url` is set (any API process answers any link), else here."""
    ttl, size = settings.image_ttl_s, settings.image_store_bytes
    if settings.redis_url is None:
        return MemoryImageStore(ttl_s=ttl, max_bytes=size)
    prefix = settings.redis_stream_prefix
    return RedisImageStore(settings.redis_url, prefix=prefix, ttl_s=ttl, max_bytes=size)


def make_worker(settings: Settings, queue: Broker, pipeline: Pipeline) -> Worker:
    """A worker running `pipeline` on `queue`, warming up each batch-size bucket first."""
    from model.graphs import compile_cache_counts
    from service.gpu.executor import Executor, encode
    from service.gpu.pace import Pace
    from service.gpu.worker import Worker

    size = pipeline.config.image_size
    # The GPU thread shares the interpreter with the event loop and the encoders, and needs the lock back
    # after every kernel launch and copy; a busy holder keeps it up to the switch interval (5 ms by
    # default), which under load multiplied into a batch's time.
    sys.setswitchinterval(SWITCH_INTERVAL_S)

    def warmup() -> None:
        seconds = pipeline.warmup(settings.max_batch_size, width=size, height=size)
        by_size = ", ".join(f"{n}: {s:.1f}" for n, s in seconds.items())
        log.info("warmed up in %.1f s (seconds per batch size: %s)", sum(seconds.values()), by_size)
        if settings.compile and pipeline.device.type == "cuda":
            log.info("compile caches: %s", compile_cache_counts())
        if settings.gc_freeze:
            log.info("%d objects of the start-up exempt from garbage collection", heap.freeze_start_up())

    return Worker(
        cast(WorkQueue, queue),  # both brokers serve both sides of the queue
        Executor(pipeline),
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        variations_apart=pipeline.image_denoiser is not None,
        model=pipeline.config,
        encode=encode,
        encoders=settings.encoders,
        hang_timeout_s=settings.hang_timeout_s,
        warmup=warmup,
        in_flight=settings.batches_in_flight or (2 if pipeline.device.type == "cuda" else 1),
        pace=Pace() if settings.launch_policy == "timed" else None,
    )


async def _start(
    runtime: Runtime, settings: Settings, pipeline: Pipeline | None, broker: Broker | None, run_worker: bool
) -> None:
    """Load the model (in a thread), connect the queue and start the worker; record any failure."""
    try:
        if not run_worker:
            runtime.broker = broker if broker is not None else make_broker(settings)
        else:
            if pipeline is None:
                pipeline = await asyncio.to_thread(load_pipeline, settings)
            runtime.broker = broker if broker is not None else make_broker(settings, pipeline.config.name)
            runtime.worker = make_worker(settings, runtime.broker, pipeline)
            runtime.worker_task = asyncio.create_task(runtime.worker.run(), name="paella-worker")
        runtime.images = make_image_store(settings)
    except Exception as e:
        log.exception("the service could not start")
        runtime.failure = f"start-up failed: {e}"


def create_app(
    settings: Settings | None = None,
    *,
    pipeline: Pipeline | None = None,
    broker: Broker | None = None,
    run_worker: bool = True,
) -> FastAPI:
    """The HTTP API.

    Args:
        settings: the configuration; read from the environment when None.
        pipeline: a loaded model to serve; loaded from `settings.weights` when None.
        broker: the queue; in-process (or Redis when `settings.redis_url` is set) when None.
        run_worker: also run the GPU worker in this process (`paella serve`); False for `paella api`,
            which loads no model and serves the models of the workers on the queue.
    """
    settings = settings or Settings()
    limits = Limits(settings.rate_limit_per_min, settings.cost_limit_per_min)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings, limits=limits)
        app.state.runtime = runtime
        starting = asyncio.create_task(_start(runtime, settings, pipeline, broker, run_worker))
        lag = asyncio.create_task(metrics.watch_event_loop(), name="paella-loop-lag")
        heap.watch_pauses()
        try:
            yield
        finally:
            lag.cancel()
            await starting
            await runtime.close()

    app = FastAPI(
        title="Paella Serve",
        version="0.1.0",
        summary="Text-to-image with Paella v1, batched on the GPU; OpenAI Images API shape.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(playground)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    app.add_middleware(Access, keys=settings.keys(), limits=limits)
    if settings.origins():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.origins(),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-Id"],
            expose_headers=["X-Request-Id", "Retry-After", "X-Paella-Seed"],
        )
    app.add_middleware(RequestMetrics, routes=router.routes)
    app.add_middleware(RequestId)  # outermost: every answer, refusals of the middleware above included
    return app
