"""How `paella serve` behaves past its capacity, on this machine's CPU with the shipped paella-mini.

Measures a lone request's latency, finds the highest open-loop rate whose p99 stays within twice that,
then drives twice and four times that rate: what is admitted, how fast, what is turned away (503 with
Retry-After, within how long), and the server's memory over time. Mixed operations by default.

    PYTHONPATH=. .venv/bin/python benchmarks/overload_cpu.py --out benchmarks/results/overload_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.load import Workload, open_loop
from benchmarks.support import service


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class MemoryWatch:
    """The resident memory of a process, sampled every second in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples = pid, [rss_mib(pid)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(rss_mib(self.pid))

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return [round(x, 1) for x in self.samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/overload_cpu.json"))
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--search-seconds", type=float, default=20)
    parser.add_argument("--uniform", action="store_true", help="generations only, not the mix")
    args = parser.parse_args()
    env = {"PAELLA_DEVICE": "cpu", "PAELLA_LOG_LEVEL": "warning", "PAELLA_MAX_BATCH_SIZE": "8"}
    report: dict[str, Any] = {"cpu_count": os.cpu_count(), "settings": env, "mix": not args.uniform}
    with service("serve", env) as running:
        url, pid = running.url, running.pid
        size = httpx.get(f"{url}/v1/models").json()["data"][0]["image_size"]
        workload = Workload(
            size, mix=not args.uniform, prompt="a large red circle in the top left on a blue background"
        )
        with httpx.Client(base_url=url, timeout=60) as http:
            lone = []
            for i in range(12):
                path, body = workload(10**6 + i)
                began = time.perf_counter()
                http.post(path, json=body, headers={"Accept": "image/png"}).raise_for_status()
                lone.append(time.perf_counter() - began)
        lone_ms = 1000 * statistics.median(lone[2:])
        report["lone_ms"] = round(lone_ms, 1)
        print(f"lone request: {lone_ms:.0f} ms", flush=True)
        rate, best, ladder = 0.5, None, []
        while rate < 20:
            trial = asyncio.run(open_loop(url, rate, args.search_seconds, workload))
            ladder.append(trial)
            print(json.dumps(trial), flush=True)
            if trial["errors"] or trial["p99_ms"] is None or trial["p99_ms"] > 2 * lone_ms:
                break
            best = rate
            rate = round(rate * 1.5, 2)
        report["search"] = ladder
        report["highest_rate_p99_within_twice_lone"] = best
        base = best or 0.5
        for factor in (2, 4):
            watch = MemoryWatch(pid)
            over = asyncio.run(open_loop(url, base * factor, args.seconds, workload))
            over["rss_mib"] = watch.stop()
            report[f"at_{factor}x"] = over
            print(f"{factor}x:", json.dumps({k: v for k, v in over.items() if k != "rss_mib"}), flush=True)
            print("  memory MiB:", over["rss_mib"][0], "->", max(over["rss_mib"]), flush=True)
            time.sleep(5)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
