"""Load on a running service: open-loop arrivals at a fixed rate, or a fixed number of clients that each
send their next request when the last one is answered; uniform generations or a mix of operations.

Open loop (arrivals do not wait for answers) is what measures latency under a given traffic; closed loop
is what measures the most images per second the service sustains.

    PYTHONPATH=. python benchmarks/load.py --url http://127.0.0.1:8000 --rate 4 --seconds 30 [--mix]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw

Request = tuple[str, dict[str, Any]]  # (path, JSON body)


def picture(width: int, height: int) -> str:
    """A smooth test picture as base64 PNG: two shapes on a gradient (small, like real uploads)."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 8, height // 8, width // 2, height // 2), fill=(220, 40, 40))
    draw.rectangle((width // 2, height // 2, width - width // 8, height - height // 8), fill=(40, 80, 220))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def hole(width: int, height: int) -> str:
    """A mask: opaque, with a transparent square in the middle (what inpainting repaints)."""
    mask = Image.new("RGBA", (width, height), (255, 255, 255, 255))
    mask.paste((0, 0, 0, 0), (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class Workload:
    """Request bodies, one image each: uniform generations, or the mix (60% generations, 20% edits, 10%
    variations, 10% outpaints, all of one canvas, guidance spread over 3-7)."""

    def __init__(self, size: int, *, mix: bool, prompt: str, seed: int = 0) -> None:
        self.size, self.mix, self.prompt = size, mix, prompt
        self.random = random.Random(seed)
        self.image, self.mask = picture(size, size), hole(size, size)
        self.short = picture(size, size - size // 4)  # outpainted downwards to the canvas

    def __call__(self, i: int) -> Request:
        prompt = f"{self.prompt} {i}"
        if not self.mix:
            return "/v1/images/generations", {"prompt": prompt, "seed": i}
        knobs = {"seed": i, "guidance_scale": round(self.random.uniform(3, 7), 2)}
        roll = self.random.random()
        if roll < 0.6:
            return "/v1/images/generations", {"prompt": prompt, **knobs}
        if roll < 0.8:
            return "/v1/images/edits", {"prompt": prompt, "image": self.image, "mask": self.mask, **knobs}
        if roll < 0.9:
            return "/v1/images/variations", {"image": self.image, "size": f"{self.size}x{self.size}", **knobs}
        return "/v1/images/outpaints", {
            "prompt": prompt,
            "image": self.short,
            "down": self.size // 4,
            **knobs,
        }


@dataclass
class Result:
    started: float  # time.time(), comparable across client processes
    latency_s: float
    status: int
    retry_after: str | None = None
    failure: str | None = None  # no answer: the client's exception; else the error's code


async def _send(client: httpx.AsyncClient, request: Request, results: list[Result]) -> None:
    path, body = request
    started, start = time.time(), time.perf_counter()
    retry_after, failure = None, None
    try:
        answer = await client.post(path, json=body, headers={"Accept": "image/png"})
        status, retry_after = answer.status_code, answer.headers.get("retry-after")
        if status != 200:
            failure = _code(answer)
    except httpx.HTTPError as e:
        status, failure = 0, type(e).__name__  # no answer at all
    results.append(Result(started, time.perf_counter() - start, status, retry_after, failure))


def _code(answer: httpx.Response) -> str:
    try:
        return str(answer.json()["error"]["code"])
    except Exception:
        return f"status {answer.status_code}"


def _client(url: str, timeout_s: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=1024)
    return httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits)


async def open_loop(
    url: str, rate: float, seconds: float, workload: Callable[[int], Request], timeout_s: float = 120
) -> dict[str, Any]:
    """Requests arriving at `rate` per second for `seconds`, whatever the answers; every answer awaited."""
    start = time.time()
    results = await _arrivals(url, rate, seconds, workload, timeout_s, start, 0, 1)
    return summary(results, time.time() - start) | {"mode": "open", "rate_per_s": rate}


async def _arrivals(
    url: str,
    rate: float,
    seconds: float,
    workload: Callable[[int], Request],
    timeout_s: float,
    start: float,
    part: int,
    parts: int,
) -> list[Result]:
    """Requests `part`, `part + parts`, ... of the open loop, request i sent at `start + i / rate`
    (`time.time()`: one clock across processes)."""
    results: list[Result] = []
    async with _client(url, timeout_s) as client:
        tasks = []
        for i in range(part, int(rate * seconds), parts):
            delay = start + i / rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_send(client, workload(i), results)))
        await asyncio.gather(*tasks)
    return results


def _arrivals_part(args: tuple[Any, ...]) -> list[Result]:
    return asyncio.run(_arrivals(*args))


def _senders_part(args: tuple[Any, ...]) -> list[Result]:
    return asyncio.run(_senders(*args))


def open_load(
    url: str,
    rate: float,
    seconds: float,
    workload: Callable[[int], Request],
    *,
    processes: int = 1,
    timeout_s: float = 120,
) -> dict[str, Any]:
    """`open_loop` from `processes` client processes, each sending every `processes`-th request on the
    common schedule: one Python process cannot send and read a hundred or more answers a second on time,
    and a late client would be measured as a slow server."""
    if processes <= 1:
        return asyncio.run(open_loop(url, rate, seconds, workload, timeout_s))
    with _pool(processes) as pool:
        start = time.time() + 0.5  # the processes are up: the schedule starts now, for all of them
        parts = [(url, rate, seconds, workload, timeout_s, start, j, processes) for j in range(processes)]
        results = [r for part in pool.map(_arrivals_part, parts) for r in part]
    return summary(results, time.time() - start) | {
        "mode": "open",
        "rate_per_s": rate,
        "processes": processes,
    }


def closed_load(
    url: str,
    clients: int,
    seconds: float,
    workload: Callable[[int], Request],
    *,
    processes: int = 1,
    timeout_s: float = 120,
) -> dict[str, Any]:
    """`closed_loop`'s clients spread over `processes` client processes."""
    if processes <= 1:
        return asyncio.run(closed_loop(url, clients, seconds, workload, timeout_s))
    shares = [n for n in (clients // processes + (j < clients % processes) for j in range(processes)) if n]
    with _pool(len(shares)) as pool:
        start = time.time() + 0.5
        parts = [(url, n, seconds, workload, timeout_s, start, j) for j, n in enumerate(shares)]
        results = [r for part in pool.map(_senders_part, parts) for r in part]
    return summary(results, time.time() - start) | {
        "mode": "closed",
        "clients": clients,
        "processes": processes,
    }


def _pool(processes: int) -> ProcessPoolExecutor:
    """`processes` client processes, started and past their imports before it returns: a process that
    spawns (and imports the caller's main module, torch and all) during the schedule would send its
    share late, in a burst."""
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
    list(pool.map(time.sleep, [2.0] * processes))  # each busy for 2 s: every process gets started
    return pool


async def closed_loop(
    url: str, clients: int, seconds: float, workload: Callable[[int], Request], timeout_s: float = 120
) -> dict[str, Any]:
    """`clients` senders, each sending its next request as soon as the last is answered, for `seconds`."""
    start = time.time()
    results = await _senders(url, clients, seconds, workload, timeout_s, start, 0)
    return summary(results, time.time() - start) | {"mode": "closed", "clients": clients}


async def _senders(
    url: str,
    clients: int,
    seconds: float,
    workload: Callable[[int], Request],
    timeout_s: float,
    start: float,
    part: int,
) -> list[Result]:
    """`clients` senders from `start` (`time.time()`) for `seconds`; request numbers (and so seeds) from
    part * 10^7."""
    results: list[Result] = []
    counter = iter(range(part * 10**7, (part + 1) * 10**7))
    delay = start - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    async with _client(url, timeout_s) as client:

        async def sender() -> None:
            while time.time() - start < seconds:
                await _send(client, workload(next(counter)), results)

        await asyncio.gather(*(sender() for _ in range(clients)))
    return results


def summary(results: list[Result], elapsed: float) -> dict[str, Any]:
    """Latency percentiles of the answered requests (ms), images per second, and every failure by status."""
    ok = sorted(r.latency_s for r in results if r.status == 200)

    def pct(q: float) -> float | None:
        return round(1000 * ok[min(len(ok) - 1, int(q * len(ok)))], 1) if ok else None

    shed = [int(r.retry_after) for r in results if r.status == 503 and r.retry_after is not None]
    failures = Counter(f"{r.status} {r.failure}" for r in results if r.status != 200)
    retry = {"min": min(shed), "median": statistics.median(shed), "max": max(shed)} if shed else None
    return {
        "requests": len(results),
        "ok": len(ok),
        "errors": len(results) - len(ok),
        "statuses": dict(Counter(str(r.status) for r in results)),
        "failures": dict(failures),
        "retry_after_s": retry,
        "p50_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": round(1000 * ok[-1], 1) if ok else None,
        "mean_ms": round(1000 * statistics.fmean(ok), 1) if ok else None,
        "images_per_s": round(len(ok) / elapsed, 2),
        "seconds": round(elapsed, 1),
        "timeline": timeline(results),
    }


def timeline(results: list[Result]) -> list[list[float | int | None]]:
    """Per second of the run, by when requests were sent: [second, sent, failed, p50 ms, max ms of the
    answered]; shows whether a tail is spread over the run or comes in bursts."""
    if not results:
        return []
    first = min(r.started for r in results)
    by_second: dict[int, list[Result]] = {}
    for r in results:
        by_second.setdefault(int(r.started - first), []).append(r)
    rows: list[list[float | int | None]] = []
    for second in sorted(by_second):
        sent = by_second[second]
        ok = sorted(r.latency_s for r in sent if r.status == 200)
        p50 = round(1000 * ok[len(ok) // 2], 1) if ok else None
        rows.append([second, len(sent), len(sent) - len(ok), p50, round(1000 * ok[-1], 1) if ok else None])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--size", type=int, default=128, help="the canvas (the model's native one)")
    parser.add_argument("--rate", type=float, help="open loop: arrivals per second")
    parser.add_argument("--clients", type=int, help="closed loop: concurrent clients")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--mix", action="store_true", help="the mix of operations instead of generations")
    parser.add_argument("--prompt", default="a large red circle in the top left on a blue background")
    parser.add_argument("--processes", type=int, default=1, help="client processes sharing the load")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    workload = Workload(args.size, mix=args.mix, prompt=args.prompt)
    if args.rate is not None:
        report = open_load(args.url, args.rate, args.seconds, workload, processes=args.processes)
    else:
        report = closed_load(args.url, args.clients or 8, args.seconds, workload, processes=args.processes)
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
