"""Latency the service adds to one image over a direct Pipeline call (issue 4: under 10 ms at n=1).

Times, interleaved pair by pair after a warm-up, the same prompt and seed:
  direct:   Pipeline.images([Draw(Generate(prompt, ...), seed, ...)]) and the PNG encoding, in this process
  service:  POST /v1/images/generations (n=1, b64_json) over real HTTP to a `paella serve` process on the
            same weights, with the default settings
Prints a table and writes results/service_overhead.json.

    PYTHONPATH=. python benchmarks/service_overhead.py --random-mini [--pairs 40] [--threads 2]
    PYTHONPATH=. python benchmarks/service_overhead.py --weights weights/paella-mini
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import torch

from benchmarks.support import metrics
from benchmarks.support import service as paella
from model.ops import Draw, Generate
from model.pipeline import Pipeline
from model.weights import write_random_folder
from service.gpu.executor import to_png
from service.settings import DEFAULT_WEIGHTS, Settings
from training import world
from training.mini import PAELLA_MINI

PROMPT = "a large red circle in the top left on a blue background"
SERVICE_METRICS = ("paella_queue_wait_seconds", "paella_batch_compute_seconds")


def ms(times: list[float]) -> dict[str, float]:
    """Median and 90th percentile, in milliseconds."""
    p90 = statistics.quantiles(times, n=10, method="inclusive")[-1]
    return {"median_ms": round(1000 * statistics.median(times), 2), "p90_ms": round(1000 * p90, 2)}


def means(text_before: dict[str, float], text_after: dict[str, float]) -> dict[str, float]:
    """Mean of each service histogram over the measured requests, from /metrics before and after."""
    out = {}
    for name in SERVICE_METRICS:
        total = text_after[f"{name}_sum"] - text_before.get(f"{name}_sum", 0.0)
        count = text_after[f"{name}_count"] - text_before.get(f"{name}_count", 0.0)
        out[f"{name.removeprefix('paella_').removesuffix('_seconds')}_mean_ms"] = round(
            1000 * total / max(count, 1), 2
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="weight folder to load")
    source.add_argument("--random-mini", action="store_true", help="paella-mini's config with random weights")
    parser.add_argument("--pairs", type=int, default=40, help="measured (direct, service) pairs")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured pairs first")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path("results/service_overhead.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        if args.random_mini:
            weights = write_random_folder(Path(tmp), PAELLA_MINI, world.vocabulary())
        else:
            weights = args.weights
        pipeline = Pipeline.from_folder(weights, device="cpu")
        settings = Settings(weights=weights, device="cpu")
        size = pipeline.config.image_size
        request = {"prompt": PROMPT, "n": 1, "size": f"{size}x{size}"}

        def direct(seed: int) -> bytes:
            op = Generate(PROMPT, size, size)
            return to_png(pipeline.images([Draw(op, seed, pipeline.config.sampler)])[0])

        env = {"PAELLA_WEIGHTS": str(weights), "PAELLA_DEVICE": "cpu", "OMP_NUM_THREADS": str(args.threads)}
        with paella("serve", env) as running, httpx.Client(base_url=running.url, timeout=120) as http:

            def service(seed: int) -> bytes:
                answer = http.post("/v1/images/generations", json={**request, "seed": seed})
                answer.raise_for_status()
                return base64.b64decode(answer.json()["data"][0]["b64_json"])

            arms: dict[str, Callable[[int], bytes]] = {"direct": direct, "service": service}
            times: dict[str, list[float]] = {"direct": [], "service": []}
            for i in range(args.warmup):
                assert direct(i) == service(i), "the service's PNG differs from the direct call's"
            before = metrics(http.get("/metrics").text)
            for i in range(args.pairs):
                order = ("direct", "service") if i % 2 == 0 else ("service", "direct")
                for arm in order:  # alternate who goes first, so drift and caches favour neither
                    start = time.perf_counter()
                    arms[arm](1000 + i)
                    times[arm].append(time.perf_counter() - start)
            after = metrics(http.get("/metrics").text)

    diffs = [s - d for s, d in zip(times["service"], times["direct"], strict=True)]
    report: dict[str, Any] = {
        "model": pipeline.config.name,
        "weights": "random" if args.random_mini else str(weights),
        "image": f"{size}x{size}",
        "steps": pipeline.config.sampler.steps,
        "pairs": args.pairs,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "settings": {"max_batch_size": settings.max_batch_size, "max_wait_ms": settings.max_wait_ms},
        "direct": ms(times["direct"]),
        "service": ms(times["service"]),
        "overhead": {
            "median_of_differences_ms": round(1000 * statistics.median(diffs), 2),
            "difference_of_medians_ms": round(
                1000 * (statistics.median(times["service"]) - statistics.median(times["direct"])), 2
            ),
        },
        "service_metrics": means(before, after),
    }
    print(f"{pipeline.config.name} {size}x{size}, {args.pairs} interleaved pairs, {args.threads} threads")
    print(f"{'':10}{'median ms':>12}{'p90 ms':>12}")
    for arm in ("direct", "service"):
        print(f"{arm:10}{report[arm]['median_ms']:>12.2f}{report[arm]['p90_ms']:>12.2f}")
    overhead = report["overhead"]["median_of_differences_ms"]
    print(f"{'overhead':10}{overhead:>12.2f}  (median of the pairs' differences)")
    print("service internals (means):", report["service_metrics"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
