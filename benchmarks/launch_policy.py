"""When the worker launches the next batch, on a simulated device: the real `Worker`, `Batcher` and
in-process queue, an open-loop arrival of n=1 requests, and an executor whose device takes the time a
measured GPU run took for each batch bucket (the `fast` rows of a `pipeline_gpu.py` JSON, the batch padded
to its bucket), with a host launch cost. Compares two batches in flight (the next launched as soon as it
is due, behind the one just launched; or timed, just before the one in flight ends: `service.gpu.pace`)
with one, and the fast path's batch buckets with others (`--buckets`, or `--no-padding` for a device with
every size a bucket). A model of the device, not the device: it shows what the policy and the padding do
to batch sizes and latency.

    PYTHONPATH=. .venv/bin/python benchmarks/launch_policy.py \
        --curve benchmarks/results/pipeline_gpu_NVIDIA_H100_80GB_HBM3.2026-12-07.first.json \
        --rate 95 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from model.config import SamplerConfig
from model.graphs import BUCKETS, bucket
from model.ops import Generate
from service.queue.admission import Admission
from service.queue.inprocess import InProcessBroker
from service.queue.jobs import Job, Made, Slice

MODEL = "simulated"


def bucket_seconds(curve: dict[int, float], buckets: tuple[int, ...]) -> dict[int, float]:
    """Each bucket's batch time: measured where the run measured it, else interpolated linearly."""
    sizes = sorted(curve)
    out = {}
    for b in buckets:
        if b in curve:
            out[b] = curve[b]
            continue
        lo = max((s for s in sizes if s < b), default=sizes[0])
        hi = min((s for s in sizes if s > b), default=sizes[-1])
        out[b] = curve[lo] + (curve[hi] - curve[lo]) * (b - lo) / max(hi - lo, 1)
    return out


class SimulatedDevice:
    """An overlapping executor: `launch` costs the host `launch_s` plus `per_image_s` per image and queues the
    batch's device time behind whatever is queued; `collect` waits until it is done."""

    def __init__(
        self, seconds: dict[int, float], launch_s: float, buckets: tuple[int, ...], per_image_s: float = 0.0
    ) -> None:
        self.seconds = seconds
        self.buckets = buckets
        self.launch_s = launch_s
        self.per_image_s = per_image_s
        self.free_at = 0.0
        self.busy_s = 0.0
        self.sizes: list[int] = []  # images per launched batch
        self.lock = threading.Lock()

    def __call__(self, slices: list[Slice]) -> list[Made]:
        return self.collect(slices, self.launch(slices))

    def launch(self, slices: list[Slice]) -> tuple[float, float]:
        """(when the batch leaves the device, the device seconds its CUDA events would show: from the
        launch's first work, which an idle device runs at once, to its end, host gaps included)."""
        images = sum(s.n for s in slices)
        began = time.perf_counter()
        time.sleep(self.launch_s + self.per_image_s * images)
        size = bucket(images, self.buckets) or max(self.buckets)
        with self.lock:
            self.sizes.append(images)
            first = max(began, self.free_at)
            self.free_at = max(time.perf_counter(), self.free_at) + self.seconds[size]
            self.busy_s += self.seconds[size]
            return self.free_at, self.free_at - first

    def collect(self, slices: list[Slice], launched: tuple[float, float]) -> list[Made]:
        time.sleep(max(0.0, launched[0] - time.perf_counter()))
        return [Made([b"png"] * s.n, [[] for _ in range(s.n)]) for s in slices]

    def running(self, launched: tuple[float, float]) -> bool:
        return time.perf_counter() < launched[0]

    def elapsed(self, launched: tuple[float, float]) -> float:
        return launched[1]


async def drive(policy: str, seconds: dict[int, float], args: argparse.Namespace) -> dict[str, Any]:
    from service.gpu.pace import Pace
    from service.gpu.worker import Worker

    broker = InProcessBroker(Admission(1e9, 1e9))
    device = SimulatedDevice(
        seconds, args.launch_ms / 1000, tuple(sorted(seconds)), args.launch_ms_per_image / 1000
    )
    worker = Worker(
        broker,
        device,
        max_batch_size=args.max_batch,
        max_wait_ms=2.0,
        in_flight=1 if policy == "one in flight" else 2,
        pace=Pace() if policy == "two in flight, timed" else None,
    )
    task = asyncio.create_task(worker.run())
    await worker.ready.wait()
    rng = random.Random(0)
    latencies: list[float] = []

    async def one(i: int) -> None:
        job = Job.new(Generate("a", 256, 256), [i], SamplerConfig(steps=8), 60.0, model=MODEL)
        began = time.perf_counter()
        await broker.submit(job)
        latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    pending = []
    at = began
    i = 0
    while at < began + args.seconds:
        at += rng.expovariate(args.rate)
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        pending.append(asyncio.create_task(one(i)))
        i += 1
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - began
    worker.stop()
    await task
    ms = sorted(1000 * x for x in latencies)
    return {
        "policy": policy,
        "requests": len(ms),
        "images_per_s": round(len(ms) / elapsed, 1),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 1),
        "mean_batch": round(statistics.mean(device.sizes), 1),
        "device_busy_share": round(device.busy_s / elapsed, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curve", type=Path, required=True, help="a pipeline_gpu.py JSON (its fast rows)")
    parser.add_argument("--rate", type=float, required=True, help="requests per second (n=1 each)")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--launch-ms", type=float, default=5.0, help="the host's time to launch a batch")
    parser.add_argument(
        "--launch-ms-per-image",
        type=float,
        default=0.0,
        help="and per image of it (the H100 service: about 1.5, building rows with the event loop busy)",
    )
    parser.add_argument("--no-padding", action="store_true", help="a device with every batch size a bucket")
    parser.add_argument("--buckets", type=int, nargs="+", help="the device's buckets")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    run = json.loads(args.curve.read_text())
    curve = {r["batch"]: r["latency_ms"] / 1000 for r in run["fast"]}
    buckets = tuple(range(1, max(BUCKETS) + 1)) if args.no_padding else tuple(args.buckets or BUCKETS)
    seconds = bucket_seconds(curve, buckets)
    rows = []
    for policy in ("two in flight", "two in flight, timed", "one in flight"):
        row = asyncio.run(drive(policy, seconds, args))
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        result = {
            "card_of_curve": run["card"],
            "date_of_curve": run.get("date"),
            "curve_ms": {str(r["batch"]): r["latency_ms"] for r in run["fast"]},
            "buckets": list(buckets),
            "settings": settings,
            "runs": rows,
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
