"""A redis-server of a test's own, on a free port, that the test may stop, restart or starve of memory
without disturbing the shared test Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


class PrivateRedis:
    """`redis-server` on a free 127.0.0.1 port; without `append_only` it keeps nothing across a restart
    (as the compose stack's Redis), with it an append-only file. `stop()` and `start()` keep the port."""

    def __init__(self, folder: Path, *, append_only: bool = False) -> None:
        self.append_only = append_only
        server = shutil.which("redis-server")
        if server is None:  # pragma: no cover - scripts/ensure-redis.sh installs it
            raise RuntimeError("redis-server is not installed (scripts/ensure-redis.sh installs it)")
        self.server = server
        self.folder = folder
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        persist = ["yes", "--appendfsync", "always"] if self.append_only else ["no"]
        args = [
            self.server,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            *persist,
        ]
        self.process = subprocess.Popen(
            [*args, "--dir", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self, *, crash: bool = True) -> None:
        """Kill the server at once (SIGKILL, as in a crash), or stop it cleanly (SIGTERM)."""
        if self.process is not None:
            if crash:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> redis.Redis:
        """An admin client whose blocking commands may wait as long as they ask (redis-py 8.2 gives clients a
        5 s socket timeout by default, shorter than a test's BLPOP for workers starting up)."""
        return redis.Redis.from_url(self.url, socket_timeout=None)

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
