"""Time the Pipeline on a CUDA device: full-size Paella v1 (random weights, same cost) and paella-mini.

For each model, dtype and batch size it times sampling (8 steps, guidance on, so 2B denoiser rows per
step), decoding, and the whole `generate` call, with CUDA events around each region after warm-up.
It also compares typical filtering on and off, the sampler's one costly knob beyond the network.
Prints a table and writes every number to --out (JSON).

    PYTHONPATH=. python benchmarks/pipeline_gpu.py --out results/pipeline_gpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.support import draws
from model.clip import ClipEncoder
from model.config import PAELLA_V1, ModelConfig
from model.denoiser import Denoiser
from model.ops import Generate
from model.pipeline import Pipeline
from model.vqgan import VQGAN

PROMPT = "a photograph of a red fox sitting in a snowy forest at dawn"


def build(config: ModelConfig, dtype: torch.dtype, vocab: list[str] | None) -> Pipeline:
    """Random-weight networks of `config`, built directly on the GPU."""
    torch.manual_seed(0)
    with torch.device("cuda"):
        denoiser, vqgan = Denoiser(config.denoiser), VQGAN(config.vqgan)
        clip = ClipEncoder(config.clip, vocab, cache_size=1024)
    return Pipeline(config, denoiser, vqgan, clip, device="cuda", dtype=dtype)


def cuda_ms(fn: Callable[[], object], repeats: int) -> list[float]:
    """Milliseconds of `fn` per call, timed with CUDA events after one warm-up call."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def measure(pipe: Pipeline, batch: int, size: int, steps: int, typical: bool, repeats: int) -> dict[str, Any]:
    sampler = dataclasses.replace(
        pipe.config.sampler, steps=steps, guidance_scale=max(pipe.config.sampler.guidance_scale, 3.0)
    )
    sampler = dataclasses.replace(sampler, typical_filtering=typical)
    batch_draws = draws([Generate(PROMPT, size, size)] * batch, list(range(batch)), sampler)

    def tokens() -> torch.Tensor:
        return pipe.tokens(batch_draws)

    t = tokens()
    sample = cuda_ms(tokens, repeats)
    decode = cuda_ms(lambda: pipe.decode(t), repeats)
    whole = cuda_ms(lambda: pipe.images(batch_draws), repeats)
    med = statistics.median
    return {
        "batch": batch,
        "size": size,
        "steps": steps,
        "typical_filtering": typical,
        "sample_ms": med(sample),
        "decode_ms": med(decode),
        "generate_ms": med(whole),
        "generate_ms_per_image": med(whole) / batch,
        "images_per_s": 1000 * batch / med(whole),
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/pipeline_gpu.json"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--mini", type=Path, default=Path("weights/paella-mini"))
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    rows: list[dict[str, Any]] = []
    started = time.time()

    def report(row: dict[str, Any]) -> None:
        rows.append(row)
        print(
            f"{row['model']:>11} {row['dtype']:>8} b={row['batch']:<3} {row['size']}px "
            f"typical={'on ' if row['typical_filtering'] else 'off'} "
            f"sample {row['sample_ms']:8.1f} ms  decode {row['decode_ms']:8.1f} ms  "
            f"generate {row['generate_ms']:8.1f} ms = {row['generate_ms_per_image']:7.1f} ms/img "
            f"({row['images_per_s']:6.1f} img/s)  peak {row['peak_mem_gib']:5.1f} GiB",
            flush=True,
        )

    if args.mini.exists():
        mini = Pipeline.from_folder(args.mini, device="cuda")
        for batch in (1, 64):
            report({"model": "paella-mini", "dtype": "float32"} | measure(mini, batch, 128, 8, True, 5))
        del mini
    for dtype in (torch.bfloat16, torch.float32):
        pipe = build(PAELLA_V1, dtype, None)
        name = str(dtype).removeprefix("torch.")
        for batch in args.batches:
            torch.cuda.reset_peak_memory_stats()
            report(
                {"model": "paella-v1", "dtype": name}
                | measure(pipe, batch, 256, args.steps, True, args.repeats)
            )
        torch.cuda.reset_peak_memory_stats()
        report({"model": "paella-v1", "dtype": name} | measure(pipe, 8, 256, args.steps, False, args.repeats))
        del pipe
        torch.cuda.empty_cache()
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "seconds": round(time.time() - started, 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
