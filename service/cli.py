"""The `paella` command line: serve, api and worker, all reading one Settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from service import heap, logs
from service.settings import Settings, env_name

if TYPE_CHECKING:
    from service.gpu.worker import Worker


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    """One `--option` per setting; each overrides its environment variable."""
    group = parser.add_argument_group("settings (each also read from its environment variable)")
    for name, field in Settings.model_fields.items():
        default = "unset" if field.default is None else field.default
        group.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=None,
            metavar=name.upper(),
            help=f"{field.description} [env {env_name(name)}; default: {default}]",
        )


def settings_from(args: argparse.Namespace) -> Settings:
    """The environment's settings, with the options given on the command line on top."""
    given = {
        name: value for name in Settings.model_fields if (value := getattr(args, name, None)) is not None
    }
    try:
        return Settings(**given)
    except ValidationError as e:
        raise SystemExit(f"invalid settings:\n{e}") from None


def serve(settings: Settings, *, run_worker: bool) -> None:
    """Run the HTTP API (and, embedded, the GPU worker) until SIGTERM or SIGINT.

    A first signal drains: /readyz turns 503 at once so load balancers stop sending, requests keep being
    served for `drain_s`, then the server stops accepting, finishes what it holds (up to the request
    deadline) and exits. A second signal stops at once.
    """
    log_config = logs.configure(settings.log_level, settings.log_format)
    import uvicorn

    from service.app import create_app

    app = create_app(settings, run_worker=run_worker)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=log_config,
        log_level=settings.log_level,
        timeout_keep_alive=round(settings.keep_alive_s),
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )

    class Draining(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            runtime = getattr(app.state, "runtime", None)
            if runtime is None or runtime.draining:
                super().handle_exit(sig, frame)
                return
            runtime.draining = True
            threading.Timer(settings.drain_s, super().handle_exit, (sig, frame)).start()

    Draining(config).run()


def worker(settings: Settings) -> None:
    """Run a GPU worker on the Redis queue until SIGINT or SIGTERM, its metrics on `metrics_port`."""
    logs.configure(settings.log_level, settings.log_format)
    from service.app import load_pipeline, make_broker, make_worker
    from service.metrics import serve_metrics, watch_event_loop

    workers: list[Worker] = []

    async def run() -> None:
        pipeline = await asyncio.to_thread(load_pipeline, settings)
        broker = make_broker(settings, pipeline.config.name)
        gpu = make_worker(settings, broker, pipeline)
        workers.append(gpu)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, gpu.stop)
        lag = asyncio.create_task(watch_event_loop(), name="paella-loop-lag")
        heap.watch_pauses()
        try:
            await gpu.run()
        finally:
            lag.cancel()
            await broker.close()

    def healthy() -> bool:
        return all(w.alive for w in workers)

    port = settings.worker_metrics_port()
    exporter = serve_metrics(port, settings.host, healthy) if port else None
    try:
        asyncio.run(run())
    finally:
        if exporter is not None:
            exporter.shutdown()
            exporter.server_close()
    if not healthy():  # a hung GPU thread would hold the interpreter open: leave now, let it be restarted
        logging.getLogger(__name__).critical("the worker hung; exiting")
        os._exit(3)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paella", description="Paella Serve")
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, str] = {
        "serve": "run the HTTP API and the GPU worker in one process (Redis queue if PAELLA_REDIS_URL)",
        "api": "run only the HTTP API on the Redis queue (PAELLA_REDIS_URL); no model or weights: it serves "
        "the models of the workers on the queue",
        "worker": "run only the GPU worker on the Redis queue (PAELLA_REDIS_URL)",
    }
    for name, help in commands.items():
        add_settings_options(sub.add_parser(name, help=help, description=help))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    handlers: dict[str, Any] = {
        "serve": lambda: serve(settings_from(args), run_worker=True),
        "api": lambda: serve(_with_redis(settings_from(args)), run_worker=False),
        "worker": lambda: worker(_with_redis(settings_from(args))),
    }
    handlers[args.command]()


def _with_redis(settings: Settings) -> Settings:
    if settings.redis_url is None:
        raise SystemExit(
            f"set {env_name('redis_url')} (or --redis-url): this command works on the Redis queue"
        )
    return settings
