"""Scale-out: one `paella api` and K `paella worker` processes sharing one Redis, driven by open-loop
generations at rising rates. For K = 1 and K = `--workers`, the sustained images/s: the highest rate
whose p99 stays within `--p99-ms` with no error. Workers run one per GPU (`cuda:i`), or on the CPU one
per core (pinned with taskset, one thread each); on the CPU the API, Redis and the load generator stay on
`--host-cores` for every K.

    # CPU, paella-mini, two workers on two cores (p99 bound 1 s: a lone request takes ~0.4 s there)
    PYTHONPATH=. .venv/bin/python benchmarks/scale_out.py --device cpu --p99-ms 1000 \\
        --out benchmarks/results/scale_out_cpu.json
    # a GPU host: full-size v1 with random weights, one worker per GPU
    PYTHONPATH=. python3 benchmarks/scale_out.py --device cuda --random-v1 --workers 2 \\
        --out $OUT/scale_out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.load import Workload, open_load
from benchmarks.support import REPO, free_port, metrics, service

PROMPT = "a large red circle in the top left on a blue background"


@contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    """`url`, or a redis-server of our own on a free port (no persistence) for the span of the block."""
    if url is not None:
        yield url
        return
    server = shutil.which("redis-server") or str(REPO / ".redis" / "redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        process = subprocess.Popen(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                folder,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)


@contextmanager
def workers(count: int, env: dict[str, str], device: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` warm `paella worker` processes: on `cuda:i`, or pinned to core i with one thread."""
    procs, ports = [], []
    for i in range(count):
        port = free_port()
        full = {**os.environ, **env, "PAELLA_METRICS_PORT": str(port)}
        full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "service", "worker"]
        if device == "cpu":
            full |= {"PAELLA_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            command = ["taskset", "-c", str(i % (os.cpu_count() or 1)), *command]
        else:
            full["PAELLA_DEVICE"] = f"cuda:{i}"
        procs.append(subprocess.Popen(command, env=full, cwd=REPO))
        ports.append(port)
    try:
        for proc, port in zip(procs, ports, strict=True):
            deadline = time.monotonic() + 900
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with {proc.returncode}")
                try:
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                    if metrics(text).get("paella_worker_up") == 1.0:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("a worker did not warm up within 900 s")
                time.sleep(0.2)
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def sustained(url: str, args: argparse.Namespace, workload: Workload) -> dict[str, Any]:
    """Climb rates by `--step` from `--start-rate` while p99 <= `--p99-ms` and nothing fails, then narrow
    the gap between the last rate that held and the first that did not `--refine` times (geometric
    midpoints), so the two K are compared at a finer grain than the climb's step."""
    ladder: list[dict[str, Any]] = []

    def holds(rate: float) -> dict[str, Any] | None:
        trial = open_load(url, rate, args.seconds, workload, processes=args.client_processes)
        ladder.append(trial)
        print(json.dumps(trial), flush=True)
        failed = trial["errors"] or trial["p99_ms"] is None or trial["p99_ms"] > args.p99_ms
        return None if failed else trial

    rate, best, failed_at = args.start_rate, None, None
    while rate <= args.max_rate:
        trial = holds(rate)
        if trial is None:
            failed_at = rate
            break
        best = trial
        rate = round(rate * args.step, 2)
    for _ in range(args.refine if best is not None and failed_at is not None else 0):
        assert best is not None and failed_at is not None
        middle = round((best["rate_per_s"] * failed_at) ** 0.5, 2)
        trial = holds(middle)
        if trial is None:
            failed_at = middle
        else:
            best = trial
    return {"best": best, "ladder": ladder}


def card(device: str) -> str:
    if device == "cpu":
        return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"
    import torch

    return torch.cuda.get_device_name(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--workers", type=int, default=2, help="K: the largest number of workers")
    parser.add_argument("--weights", type=Path, default=REPO / "weights" / "paella-mini")
    parser.add_argument("--random-v1", action="store_true", help="full-size Paella v1 with random weights")
    parser.add_argument("--redis-url", default=None, help="default: a redis-server of our own")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--p99-ms", type=float, default=500.0)
    parser.add_argument("--start-rate", type=float, default=0.5)
    parser.add_argument("--step", type=float, default=1.25)
    parser.add_argument("--max-rate", type=float, default=2000.0)
    parser.add_argument("--refine", type=int, default=2, help="bisections after the climb's first failure")
    parser.add_argument(
        "--host-cores",
        default="0",
        help="cpu: cores for the API, Redis and the load generator, the same for every K ('' = any)",
    )
    parser.add_argument(
        "--client-processes", type=int, help="load generator processes (default: 1 on a CPU, 6 on GPUs)"
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale_out.json"))
    args = parser.parse_args()
    if args.client_processes is None:
        args.client_processes = 1 if args.device == "cpu" else 6
    if args.device == "cpu" and args.host_cores:
        # The harness (this process, Redis, the API and the load generator, which inherit it) stays on the
        # same cores for every K: on a CPU the workers' cores stand for the GPUs, and the host's share of
        # them must not change with K.
        os.sched_setaffinity(0, {int(c) for c in args.host_cores.split(",")})
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if args.random_v1:
            import torch

            from model.config import PAELLA_V1
            from model.weights import write_random_folder

            weights = write_random_folder(Path(tmp) / "v1", PAELLA_V1, device="cuda", dtype=torch.float16)
        report: dict[str, Any] = {"card": card(args.device), "workers": args.workers, "device": args.device}
        report["settings"] = {k: v for k, v in vars(args).items() if k not in ("out", "weights")}
        runs: dict[int, dict[str, Any]] = {}
        with redis_server(args.redis_url) as url:
            for k in sorted({1, args.workers}):
                env = {
                    "PAELLA_WEIGHTS": str(weights),
                    "PAELLA_REDIS_URL": url,
                    "PAELLA_REDIS_STREAM_PREFIX": f"scale-{uuid.uuid4().hex[:6]}",
                    "PAELLA_MAX_BATCH_SIZE": str(args.max_batch),
                    "PAELLA_LOG_LEVEL": "warning",
                }
                with workers(k, env, args.device), service("api", env) as api:
                    size = httpx.get(f"{api.url}/v1/models").json()["data"][0]["image_size"]
                    print(f"K = {k}", flush=True)
                    runs[k] = sustained(api.url, args, Workload(size, mix=False, prompt=PROMPT))
    rates = {k: (r["best"] or {}).get("images_per_s", 0.0) for k, r in runs.items()}
    report["images_per_s_1"] = rates[1]
    report["images_per_s_k"] = rates[args.workers]
    report["scale_out_ratio"] = round(rates[args.workers] / rates[1], 2) if rates[1] else None
    report["p99_ms"] = {k: (r["best"] or {}).get("p99_ms") for k, r in runs.items()}
    report["runs"] = runs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: report[k]
                for k in ("card", "workers", "images_per_s_1", "images_per_s_k", "scale_out_ratio", "p99_ms")
            }
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
