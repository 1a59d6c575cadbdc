"""What the benchmarks share: a `paella serve` process to drive, its metrics, draws of one operation, and
how two runs' token grids differ."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from model.config import SamplerConfig
from model.ops import Draw, Generate, Operation

if TYPE_CHECKING:
    from torch import Tensor

    from model.pipeline import Pipeline

REPO = Path(__file__).resolve().parent.parent


def draws(ops: Sequence[Operation], seeds: Sequence[int], sampler: SamplerConfig) -> list[Draw]:
    return [Draw(op, seed, sampler) for op, seed in zip(ops, seeds, strict=True)]


def generations(prompts: Sequence[str], size: int, sampler: SamplerConfig) -> list[Draw]:
    """A size x size generation of each prompt, seeded by its index."""
    return draws([Generate(p, size, size) for p in prompts], range(len(prompts)), sampler)


def tokens_in_batches(pipe: Pipeline, batch: Sequence[Draw], size: int = 32) -> Tensor:
    """The token grids [N, H, W] of `batch`, run `size` draws at a time (1: each alone)."""
    import torch  # here only: the service drivers (scale_out.py, overload_cpu.py) need none

    return torch.cat([pipe.tokens(batch[i : i + size]) for i in range(0, len(batch), size)])


def wall_ms(fn: Callable[[], Any], repeats: int, cuda: bool = True) -> list[float]:
    """Wall milliseconds of each of `repeats` calls of `fn`; on CUDA with the device's queue drained before
    and after each."""
    import torch

    out = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        out.append(1000 * (time.perf_counter() - start))
    return out


def differing(a: Tensor, b: Tensor) -> list[float]:
    """Of two runs' token grids [N, H, W], the share of differing tokens of each image that has any,
    largest first."""
    share = (a != b).flatten(1).float().mean(1)
    return sorted((round(v, 4) for v in share.tolist() if v > 0), reverse=True)


def mixed_batch(pipe: Pipeline, prompts: list[str], base: SamplerConfig) -> float:
    """A batch of generations at guidance 3..7 and temperatures 0.8..1.2 against each alone: the share of
    tokens equal."""
    size = pipe.config.image_size
    batch = [
        Draw(
            Generate(p, size, size),
            i,
            base.replace(guidance_scale=3 + i % 5, temp_range=(0.8 + 0.1 * (i % 5),) * 2),
        )
        for i, p in enumerate(prompts)
    ]
    together = pipe.tokens(batch)
    alone = tokens_in_batches(pipe, batch, 1)
    return round((together == alone).float().mean().item(), 5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Running:
    """A service process: where it answers, and its pid."""

    url: str
    pid: int


@contextmanager
def service(
    command: str = "serve", env: Mapping[str, str] | None = None, ready_timeout_s: float = 600.0
) -> Iterator[Running]:
    """A `paella <command>` process on a free local port, ready (its /readyz answered 200); stopped with
    SIGTERM at the end. `env` adds PAELLA_* settings to this process's environment."""
    port = free_port()
    full = {**os.environ, "PAELLA_HOST": "127.0.0.1", "PAELLA_PORT": str(port), **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full.get("PYTHONPATH")]))
    process = subprocess.Popen([sys.executable, "-m", "service", command], env=full, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"paella {command} exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"paella {command} was not ready within {ready_timeout_s} s")
            time.sleep(0.1)
        yield Running(url, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def metrics(text: str) -> dict[str, float]:
    """Every sample of a Prometheus exposition, by name and labels (`name{a="b"}`)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out
