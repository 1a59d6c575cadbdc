"""Paella v1 on a CUDA card: the Pipeline, and with --service the service on top of it.

Pipeline: our plain float32 eager path against the fast path (float16, compiled networks, the fused
sampling kernel, CUDA graphs, batched decoding), full-size Paella v1 with random weights of the published
shapes (the published files' cost), and the fast path's token agreement on the trained paella-mini. For
each path and batch size: the whole pipeline call (prompts in, decoded pictures out, wall clock), images
per second, peak memory, and its split into text encoding, sampling steps, VQGAN decoding and PNG encoding
(each timed alone). Prompts differ on every call, so text encoding is never served from the cache.

Service (--service): `paella serve` on the same model (written as a weight folder of random weights)
driven over HTTP: n=1 latency, open-loop load at 80% of the pipeline's best images/s for --load-seconds,
the highest rate whose p99 stays within 500 ms, and the most images/s of uniform and of mixed traffic.

Writes (or, with --skip-pipeline, adds to) one JSON per card under --out and prints a table.

    PYTHONPATH=. python3 benchmarks/pipeline_gpu.py --out benchmarks/results --service
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import torch

from benchmarks.load import Workload, closed_load, open_load
from benchmarks.support import (
    differing,
    draws,
    generations,
    metrics,
    mixed_batch,
    service,
    tokens_in_batches,
    wall_ms,
)
from model.clip import ClipEncoder
from model.config import PAELLA_V1, ModelConfig, SamplerConfig
from model.denoiser import Denoiser
from model.graphs import compile_cache_counts
from model.ops import Draw, Generate
from model.pipeline import Pipeline
from model.vqgan import VQGAN
from model.weights import write_random_folder
from service.app import SWITCH_INTERVAL_S
from service.gpu.executor import encode
from training import world

FAST_DTYPE = torch.float16  # what PAELLA_DTYPE=auto picks on CUDA
PROMPT = "a photograph of a red fox sitting in a snowy forest at dawn, number"
_counter = itertools.count()
# the measured settings: the v1 preset at 8 steps (the paper's claim) and guidance 5
BENCHED = dataclasses.replace(PAELLA_V1, sampler=PAELLA_V1.sampler.replace(steps=8, guidance_scale=5.0))


def fresh_prompts(n: int) -> list[str]:
    """Prompts never seen before in this run: text encoding is measured, not looked up."""
    return [f"{PROMPT} {next(_counter)}" for _ in range(n)]


def fresh_draws(n: int, size: int, sampler: SamplerConfig) -> list[Draw]:
    """n generations of a size x size canvas with fresh prompts, seeds 0 to n - 1."""
    return draws([Generate(p, size, size) for p in fresh_prompts(n)], list(range(n)), sampler)


def build(config: ModelConfig, dtype: torch.dtype) -> Pipeline:
    """Random-weight networks of `config`, built on the GPU (the cost of the published weights)."""
    torch.manual_seed(0)
    with torch.device("cuda"):
        denoiser, vqgan = Denoiser(config.denoiser), VQGAN(config.vqgan)
        clip = ClipEncoder(config.clip, None, cache_size=1024)
    return Pipeline(config, denoiser, vqgan, clip, device="cuda", dtype=dtype)


@contextmanager
def reference_mode() -> Iterator[None]:
    """Plain float32, no TF32 anywhere, inside; the settings as they were after. The fast path must not
    compile under these: Inductor's cache keys hold the matmul settings, so a restarted process (and the
    service) with the defaults would find none of the first warm-up's compiled artefacts."""
    # restored as the precision settings they were: writing the legacy flags back would not give
    # the default's "none" but "ieee", another cache key
    settings = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)
    before = [s.fp32_precision for s in settings]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        for setting, precision in zip(settings, before, strict=True):
            setting.fp32_precision = precision


def png_ms(images: list[Any]) -> float:
    """The service's PNG encoding of a batch on one core (the service spreads it over a pool)."""
    start = time.perf_counter()
    for image in images:
        encode(image)
    return 1000 * (time.perf_counter() - start)


def measure(pipe: Pipeline, batch: int, sampler: SamplerConfig, repeats: int) -> dict[str, Any]:
    size = pipe.config.image_size

    def batch_draws() -> list[Draw]:
        return fresh_draws(batch, size, sampler)

    pipe.images(batch_draws())  # warm-up (and, on the fast path, the graph's capture)
    torch.cuda.reset_peak_memory_stats()
    whole = wall_ms(lambda: pipe.images(batch_draws()), repeats)
    peak = torch.cuda.max_memory_allocated() / 2**30
    with torch.inference_mode():
        text = wall_ms(lambda: pipe.clip.encode_text(fresh_prompts(batch)), repeats)
        prepared = [pipe.rows(batch_draws()) for _ in range(repeats)]
        at = iter(prepared)
        steps = wall_ms(lambda: pipe.sample(next(at)), repeats)
    tokens = pipe.tokens(batch_draws())
    decode = wall_ms(lambda: pipe.decode(tokens), repeats)
    png = png_ms(pipe.decode(tokens))
    med = statistics.median
    return {
        "batch": batch,
        "latency_ms": round(med(whole), 2),
        "latency_min_ms": round(min(whole), 2),
        "images_per_s": round(1000 * batch / med(whole), 2),
        "peak_memory_gib": round(peak, 2),
        "split_ms": {
            "text": round(med(text), 2),
            "steps": round(med(steps), 2),
            "decode": round(med(decode), 2),
            "png_encode_cpu": round(png, 2),
        },
    }


def run_path(name: str, pipe: Pipeline, batches: list[int], repeats: int) -> list[dict[str, Any]]:
    sampler = pipe.config.sampler
    rows = []
    for batch in batches:
        row = {"path": name} | measure(pipe, batch, sampler, repeats)
        rows.append(row)
        s = row["split_ms"]
        print(
            f"{name:>9} b={batch:<3} {row['latency_ms']:9.1f} ms  {row['images_per_s']:7.1f} img/s  "
            f"text {s['text']:6.1f}  steps {s['steps']:8.1f}  decode {s['decode']:7.1f}  "
            f"png {s['png_encode_cpu']:7.1f}  peak {row['peak_memory_gib']:5.1f} GiB",
            flush=True,
        )
    return rows


def contention(pipe: Pipeline, batches: list[int], repeats: int) -> list[dict[str, Any]]:
    """Latency while another thread keeps the interpreter busy, as `paella serve`'s event loop and
    encoders do under load (pure Python in 2 ms stretches, then a release): at Python's default switch
    interval and at the one the service's worker sets. The GPU thread needs the interpreter back after
    every launch and copy, and waits up to an interval each time."""
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            until = time.perf_counter() + 0.002
            while time.perf_counter() < until:
                sum(i * i for i in range(100))
            time.sleep(0)

    size, sampler = pipe.config.image_size, pipe.config.sampler
    out = []
    default = sys.getswitchinterval()
    for batch in batches:
        row: dict[str, Any] = {"batch": batch}

        def call(n: int = batch) -> None:
            pipe.images(fresh_draws(n, size, sampler))

        row["quiet_ms"] = round(statistics.median(wall_ms(call, repeats)), 2)
        for name, interval in (("default", default), ("service", SWITCH_INTERVAL_S)):
            sys.setswitchinterval(interval)
            stop.clear()
            thread = threading.Thread(target=busy, daemon=True)
            thread.start()
            try:
                row[f"busy_{name}_interval_ms"] = round(statistics.median(wall_ms(call, repeats)), 2)
            finally:
                stop.set()
                thread.join()
                sys.setswitchinterval(default)
        print("contention:", json.dumps(row), flush=True)
        out.append(row)
    return out


def overlap(pipe: Pipeline, batch: int, repeats: int) -> dict[str, Any]:
    """Two batches in flight, as the service's worker runs them: the host's time to launch a batch while
    the device is idle, and while the previous batch still runs (equal when no launch waits for queued
    work), against the whole batch's time."""
    size, sampler = pipe.config.image_size, pipe.config.sampler

    def batch_draws() -> list[Draw]:
        return fresh_draws(batch, size, sampler)

    none: list[tuple[int, ...]] = [()] * batch
    pipe.collect(pipe.launch(batch_draws(), none))
    idle, busy, whole = [], [], []
    for _ in range(repeats):
        first, second = batch_draws(), batch_draws()
        torch.cuda.synchronize()
        began = time.perf_counter()
        a = pipe.launch(first, none)
        launched = time.perf_counter()
        b = pipe.launch(second, none)
        relaunched = time.perf_counter()
        pipe.collect(a)
        pipe.collect(b)
        ended = time.perf_counter()
        idle.append(1000 * (launched - began))
        busy.append(1000 * (relaunched - launched))
        whole.append(1000 * (ended - began) / 2)
    med = statistics.median
    row = {
        "batch": batch,
        "launch_idle_ms": round(med(idle), 2),
        "launch_busy_ms": round(med(busy), 2),
        "batch_ms_two_in_flight": round(med(whole), 2),
        "busy_launch_runtime_calls": busy_launch_calls(pipe, batch_draws, none),
    }
    print("overlap:", json.dumps(row), flush=True)
    return row


def busy_launch_calls(
    pipe: Pipeline, batch_draws: Callable[[], list[Draw]], none: list[tuple[int, ...]]
) -> list[dict[str, Any]]:
    """Which CUDA runtime calls the host spent a busy launch in (the profiler's host-side view): a launch
    that waits for the batch in flight shows the call that waited (a graph launch, an allocation, a copy,
    a synchronisation)."""
    from torch.profiler import ProfilerActivity, profile

    a = pipe.launch(batch_draws(), none)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        b = pipe.launch(batch_draws(), none)
    pipe.collect(a)
    pipe.collect(b)
    calls = [e for e in prof.key_averages() if e.key.startswith("cu")]
    calls.sort(key=lambda e: e.cpu_time_total, reverse=True)
    return [
        {"call": e.key, "count": e.count, "host_ms": round(e.cpu_time_total / 1000, 2)} for e in calls[:8]
    ]


def rounded(seconds: dict[int, float]) -> dict[int, float]:
    return {n: round(t, 1) for n, t in seconds.items()}


def restart(largest: int, autotune: bool) -> dict[str, Any]:
    """A new process starting the fast path as a restarted service would: compiled artefacts come from the
    on-disk caches this run's first warm-up wrote (Inductor's FX graph and kernel caches); cuDNN's
    timings and the CUDA graphs are made again. Also its batch-1 and largest-batch latency."""
    command = [sys.executable, "-m", "benchmarks.pipeline_gpu", "--restart-child", str(largest)]
    command += [] if autotune else ["--no-autotune"]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, check=False)
    if done.returncode != 0:
        return {"autotune": autotune, "error": done.stderr[-2000:]}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row |= {"autotune": autotune, "process_s": round(time.perf_counter() - began, 1)}
    print("restart:", json.dumps(row), flush=True)
    return row


def restart_child(largest: int, autotune: bool) -> None:
    began = time.perf_counter()
    fast = build(BENCHED, FAST_DTYPE)
    built = time.perf_counter()
    fast.accelerate(autotune=autotune)
    by_batch = fast.warmup(largest, width=256, height=256)
    warm = time.perf_counter()
    size, sampler = BENCHED.image_size, BENCHED.sampler
    latency = {
        n: statistics.median(wall_ms(lambda n=n: fast.images(fresh_draws(n, size, sampler)), 3))
        for n in (1, largest)
    }
    out = {
        "build_s": round(built - began, 1),
        "warmup_s": round(warm - built, 1),
        "warmup_by_batch_s": rounded(by_batch),
        "batch1_latency_ms": round(latency[1], 2),
        f"batch{largest}_images_per_s": round(1000 * largest / latency[largest], 2),
        "compile_caches": compile_cache_counts(),
    }
    print(json.dumps(out))


def agreement(mini: Path, n: int) -> dict[str, Any]:
    """On the trained paella-mini: the fast path's tokens against our float32 eager path's, seed by seed,
    and a seed alone against the same seed inside a batch of 32."""
    prompts = world.eval_prompts(n, 0).prompts
    with reference_mode():
        ref = Pipeline.from_folder(mini, device="cuda", dtype=torch.float32)
        sampler = ref.config.sampler
        size = ref.config.image_size
        batch = generations(prompts, size, sampler)
        a = tokens_in_batches(ref, batch)
        del ref
    fast = Pipeline.from_folder(mini, device="cuda", dtype=FAST_DTYPE)
    fast.accelerate()
    b = tokens_in_batches(fast, batch)
    alone = tokens_in_batches(fast, batch, 1)  # every seed alone, against its batch of 32
    mixed = mixed_batch(fast, prompts[:32], sampler)
    return {
        "model": "paella-mini",
        "images": n,
        "token_agreement": round((a == b).float().mean().item(), 5),
        "batch_invariance_token_agreement": round((alone == b).float().mean().item(), 5),
        "mixed_batch_invariance_token_agreement": mixed,
        # scattered single tokens, or an early difference carried through the later steps: which, per image
        "images_differing": {"fast_vs_reference": differing(a, b), "alone_vs_batch": differing(alone, b)},
    }


def service_mode(args: argparse.Namespace, best: float) -> dict[str, Any]:
    """`paella serve` on full-size Paella v1 (random weights) or --weights, driven over HTTP: first with the
    service's default settings (the whole suite, the top-level keys), then once per `--variant` (n=1 and the
    open loop, to compare with the first); what was measured before a failure is kept, with the failure."""
    out: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            weights = args.weights
            if weights is None:
                weights = write_random_folder(
                    Path(tmp) / "v1", PAELLA_V1, device=args.device, dtype=torch.float16
                )
                torch.cuda.empty_cache()
            compared = []
            for i, overrides in enumerate([{}, *(variant(v) for v in args.variant or [])]):
                part: dict[str, Any] = {}
                try:
                    _service_mode(args, best, weights, overrides, part, whole=i == 0)
                finally:
                    if i == 0:
                        out |= part
                    compared.append(
                        {"settings": overrides or "defaults"}
                        | {k: part.get(k) for k in COMPARED}
                        | {"open_loop_80": part.get("service_detail", {}).get("open_loop_80")}
                    )
                    out["service_variants"] = compared
    except Exception as e:
        traceback.print_exc()
        out["service_error"] = repr(e)
    return out


COMPARED = ("service_startup_s", "service_p50_ms", "service_load_rate_per_s", "service_load_p99_ms")


def variant(text: str) -> dict[str, str]:
    """`PAELLA_A=1,PAELLA_B=x` as settings."""
    pairs = [item.split("=", 1) for item in text.split(",") if item]
    if any(len(p) != 2 or not p[0].startswith("PAELLA_") for p in pairs):
        raise SystemExit(f"--variant wants PAELLA_NAME=value[,...], got {text!r}")
    return dict(pairs)


def _service_mode(
    args: argparse.Namespace,
    best: float,
    weights: Path,
    overrides: dict[str, str],
    out: dict[str, Any],
    *,
    whole: bool,
) -> None:
    env = {
        "PAELLA_WEIGHTS": str(weights),
        "PAELLA_DEVICE": args.device,
        "PAELLA_MAX_BATCH_SIZE": str(args.service_max_batch),
        "PAELLA_MAX_QUEUE_COST": "4096",  # measure the server past saturation, not admission
        "PAELLA_MAX_QUEUE_WAIT_S": "60",
        "PAELLA_REQUEST_TIMEOUT_S": "60",
        "PAELLA_ENCODERS": str(args.encoders),
        "PAELLA_LOG_LEVEL": "warning",
    } | overrides
    start = time.perf_counter()
    with service("serve", env, ready_timeout_s=600) as running:
        url = running.url
        out["service_startup_s"] = round(time.perf_counter() - start, 1)
        size = httpx.get(f"{url}/v1/models").json()["data"][0]["image_size"]
        uniform = Workload(size, mix=False, prompt=PROMPT)
        mixed = Workload(size, mix=True, prompt=PROMPT)
        with httpx.Client(base_url=url, timeout=120) as http:
            lone = []
            for i in range(args.lone + 5):
                path, body = uniform(10**6 + i)
                began = time.perf_counter()
                http.post(path, json=body, headers={"Accept": "image/png"}).raise_for_status()
                lone.append(1000 * (time.perf_counter() - began))
        out["service_p50_ms"] = round(statistics.median(lone[5:]), 2)
        print(
            f"service, {overrides or 'defaults'}: start-up {out['service_startup_s']} s, "
            f"n=1 p50 {out['service_p50_ms']} ms",
            flush=True,
        )
        rate = round(0.8 * best, 1)
        procs = args.client_processes
        load = phase(url, lambda: open_load(url, rate, args.load_seconds, uniform, processes=procs))
        print("open loop at 80%:", json.dumps(load), flush=True)
        out |= {
            "service_load_rate_per_s": rate,
            "service_load_p99_ms": load["p99_ms"],
            "service_load_errors": load["errors"],
        }
        shown = "random paella-v1" if args.weights is None else str(weights)
        detail: dict[str, Any] = {
            "settings": env | {"PAELLA_WEIGHTS": shown},
            "lone_ms": [round(x, 1) for x in lone],
            "open_loop_80": load,
        }
        out["service_detail"] = detail
        if not whole:
            return
        highest, search = rate if _holds(load) else None, []
        seconds = args.search_seconds
        for share in (0.9, 1.0, 1.1):
            if highest is None:
                break
            at = round(share * best, 1)
            trial = phase(url, lambda at=at: open_load(url, at, seconds, uniform, processes=procs))
            search.append(trial)
            print(f"open loop at {share:.0%}:", json.dumps(trial), flush=True)
            if not _holds(trial):
                break
            highest = trial["rate_per_s"]
        out["service_highest_rate_p99_500ms_per_s"] = highest
        # enough clients that a full batch always waits, so that images/s is what the service sustains
        # rather than what the clients' round trips allow (uploads make a mixed request's trip longer)
        clients = args.closed_clients or 4 * args.service_max_batch
        most_uniform = phase(url, lambda: closed_load(url, clients, seconds, uniform, processes=procs))
        most_mixed = phase(url, lambda: closed_load(url, clients, seconds, mixed, processes=procs))
        mixed_load = phase(url, lambda: open_load(url, rate, seconds, mixed, processes=procs))
        print("closed loop uniform:", json.dumps(most_uniform), flush=True)
        print("closed loop mixed:", json.dumps(most_mixed), flush=True)
        print("open loop mixed at 80%:", json.dumps(mixed_load), flush=True)
        out |= {
            "service_uniform_images_per_s": most_uniform["images_per_s"],
            "service_mixed_images_per_s": most_mixed["images_per_s"],
            "service_mixed_share": round(most_mixed["images_per_s"] / most_uniform["images_per_s"], 3)
            if most_uniform["images_per_s"]
            else None,
            "service_mixed_p99_ms": mixed_load["p99_ms"],
            "service_mixed_errors": mixed_load["errors"],
        }
        seen = metrics(httpx.get(f"{url}/metrics").text)
        batches = seen.get("paella_batch_size_count", 0.0)
        detail |= {
            "search": search,
            "closed_uniform": most_uniform,
            "closed_mixed": most_mixed,
            "open_mixed_80": mixed_load,
            "mean_batch_size": round(seen.get("paella_batch_size_sum", 0.0) / max(batches, 1), 2),
            "mean_queue_wait_ms": round(
                1000
                * seen.get("paella_queue_wait_seconds_sum", 0.0)
                / max(seen.get("paella_queue_wait_seconds_count", 0.0), 1),
                1,
            ),
            "mean_batch_compute_ms": round(
                1000 * seen.get("paella_batch_compute_seconds_sum", 0.0) / max(batches, 1), 1
            ),
        }


def phase(url: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`run()`'s load report, with what the service's metrics saw meanwhile: batches and their mean size,
    the mean time of a batch's stages (host preparation, device, readback) and of its whole executor
    call, queue wait, and the event loop's lag (mean and the share of samples over 5 ms)."""
    before = metrics(httpx.get(f"{url}/metrics").text)
    report = run()
    after = metrics(httpx.get(f"{url}/metrics").text)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    def mean_ms(name: str, labels: str = "") -> float | None:
        count = delta(f"{name}_count{labels}")
        return round(1000 * delta(f"{name}_sum{labels}") / count, 2) if count else None

    batches = delta("paella_batch_size_count")
    lag_samples = delta("paella_event_loop_lag_seconds_count")
    over = lag_samples - delta('paella_event_loop_lag_seconds_bucket{le="0.005"}')
    report["service_side"] = {
        "batches": int(batches),
        "mean_batch_size": round(delta("paella_batch_size_sum") / batches, 2) if batches else None,
        "batch_compute_ms": mean_ms("paella_batch_compute_seconds"),
        "stage_ms": {
            stage: mean_ms("paella_batch_stage_seconds", f'{{stage="{stage}"}}')
            for stage in ("rows", "prepare", "device", "readback", "gpu")
        },
        "queue_wait_ms": mean_ms("paella_queue_wait_seconds"),
        "gc_pauses": {
            gen: {
                "count": int(delta(f'paella_gc_pause_seconds_count{{generation="{gen}"}}')),
                "mean_ms": mean_ms("paella_gc_pause_seconds", f'{{generation="{gen}"}}'),
            }
            for gen in ("0", "1", "2")
        },
        "loop_lag_ms": mean_ms("paella_event_loop_lag_seconds"),
        "loop_lag_over_5ms_share": round(over / lag_samples, 3) if lag_samples else None,
    }
    return report


def _holds(load: dict[str, Any]) -> bool:
    return load["errors"] == 0 and load["p99_ms"] is not None and load["p99_ms"] <= 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--reference-batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mini", type=Path, default=Path("weights/paella-mini"))
    parser.add_argument("--agreement-images", type=int, default=128)
    parser.add_argument("--service", action="store_true", help="also drive `paella serve` over HTTP")
    parser.add_argument("--skip-pipeline", action="store_true", help="only the service: add to the JSON")
    parser.add_argument("--weights", type=Path, help="service: this folder instead of random Paella v1")
    parser.add_argument("--device", default="cuda", help="service: the device it runs on")
    parser.add_argument("--best", type=float, help="service: the pipeline's best images/s (else the JSON's)")
    parser.add_argument("--service-max-batch", type=int, default=32)
    parser.add_argument("--encoders", type=int, default=8)
    parser.add_argument(
        "--variant",
        action="append",
        metavar="PAELLA_NAME=VALUE,...",
        help="service: another service with these settings over the defaults (n=1 and the open loop), "
        "to compare with the defaults' run; repeatable",
    )
    parser.add_argument("--closed-clients", type=int, help="service: closed-loop clients (4 x max batch)")
    parser.add_argument("--client-processes", type=int, default=6, help="service: load generator processes")
    parser.add_argument("--lone", type=int, default=20, help="service: n=1 requests one at a time")
    parser.add_argument("--load-seconds", type=float, default=60)
    parser.add_argument("--search-seconds", type=float, default=20)
    parser.add_argument("--no-restarts", action="store_true", help="skip the restarted processes' warm-ups")
    parser.add_argument(
        "--restart-autotune", action="store_true", help="also restart with cuDNN autotuning on, to compare"
    )
    parser.add_argument("--restart-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-autotune", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.restart_child:
        restart_child(args.restart_child, autotune=not args.no_autotune)
        return
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    path = args.out / f"pipeline_gpu_{card.replace(' ', '_')}.json"
    if args.skip_pipeline:
        result = json.loads(path.read_text()) if path.exists() else {"card": card, "torch": torch.__version__}
        best = args.best or result["best_throughput_images_per_s"]
        result |= service_mode(args, best)
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(
            json.dumps(
                {k: v for k, v in result.items() if k.startswith("service_") and k != "service_detail"}
            )
        )
        print(f"wrote {path}")
        return
    started = time.time()
    config = BENCHED
    print(f"{card}, torch {torch.__version__}, {config.name}: 256x256, 8 steps, guidance 5, typical on")

    with reference_mode():
        ref = build(config, torch.float32)
        reference = run_path("reference", ref, args.reference_batches, max(2, args.repeats // 2))
        del ref
    torch.cuda.empty_cache()

    fast = build(config, FAST_DTYPE)
    start = time.perf_counter()
    fast.accelerate()
    warmup_by_batch = fast.warmup(max(args.batches), width=256, height=256)
    warmup_s = time.perf_counter() - start
    first_caches = compile_cache_counts()
    print(f"warm-up {warmup_s:.1f} s:", rounded(warmup_by_batch), first_caches, flush=True)
    rows = run_path("fast", fast, args.batches, args.repeats)
    overlapped = [overlap(fast, b, args.repeats) for b in (8, 32) if b in args.batches]
    contended = contention(fast, [b for b in (8, 32) if b in args.batches], args.repeats)
    del fast
    torch.cuda.empty_cache()

    agree = agreement(args.mini, args.agreement_images)
    print(json.dumps(agree))
    best = max(rows, key=lambda r: r["images_per_s"])
    best_ref = max(reference, key=lambda r: r["images_per_s"])
    result = {
        "card": card,
        "torch": torch.__version__,
        "preset": "paella-v1 (random weights), 256x256, 8 steps, guidance 5, typical filtering 0.2",
        "batch1_latency_ms": next(r["latency_ms"] for r in rows if r["batch"] == 1),
        "best_throughput_images_per_s": best["images_per_s"],
        "best_batch_size": best["batch"],
        "reference_batch1_latency_ms": next(r["latency_ms"] for r in reference if r["batch"] == 1),
        "reference_best_throughput_images_per_s": best_ref["images_per_s"],
        "token_agreement": agree["token_agreement"],
        "batch_invariance_token_agreement": agree["batch_invariance_token_agreement"],
        "warmup_s": round(warmup_s, 1),
        "warmup_by_batch_s": rounded(warmup_by_batch),
        "warmup_compile_caches": first_caches,
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.time() - started, 1),
        "fast": rows,
        "reference": reference,
        "contention": contended,
        "overlap": overlapped,
        "agreement": agree,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_restarts:
        # the default (cuDNN autotuning off) first: `warmup_restart_s` is a restarted service's warm-up
        modes = (False, True) if args.restart_autotune else (False,)
        restarts = [restart(max(args.batches), autotune) for autotune in modes]
        result |= {"warmup_restart_s": restarts[0].get("warmup_s"), "restarts": restarts}
        result["seconds"] = round(time.time() - started, 1)
        path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list | dict)}, indent=1))
    if args.service:
        result |= service_mode(args, best["images_per_s"])
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(
            json.dumps(
                {k: v for k, v in result.items() if k.startswith("service_") and k != "service_detail"}
            )
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
