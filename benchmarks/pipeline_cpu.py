"""Time one 128 x 128 picture through the Pipeline on the CPU (8 steps with guidance by default).

Uses a weight folder if given, else paella-mini's architecture with random weights (same cost).
Prints the numbers and writes them to results/pipeline_cpu.json.

    PYTHONPATH=. python benchmarks/pipeline_cpu.py [--weights weights/paella-mini] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.support import draws
from model.ops import Generate
from model.pipeline import Pipeline
from model.weights import write_random_folder
from training import world
from training.mini import PAELLA_MINI

PROMPT = "a large red circle in the top left on a blue background"


def build(weights: Path | None) -> Pipeline:
    if weights is not None:
        return Pipeline.from_folder(weights)
    with tempfile.TemporaryDirectory() as tmp:
        return Pipeline.from_folder(write_random_folder(tmp, PAELLA_MINI, world.vocabulary()))


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/pipeline_cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = build(args.weights)
    sampler = dataclasses.replace(pipe.config.sampler, steps=args.steps)
    size = pipe.config.image_size
    batch = draws([Generate(PROMPT, size, size)] * args.batch, list(range(args.batch)), sampler)

    def timed(fn: object) -> list[float]:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()  # type: ignore[operator]
            times.append(time.perf_counter() - start)
        return times

    pipe.images(batch)  # warm-up
    total = timed(lambda: pipe.images(batch))
    tokens = pipe.tokens(batch)
    sample = timed(lambda: pipe.tokens(batch))
    decode = timed(lambda: pipe.decode(tokens))
    with torch.inference_mode():  # uncached: the tokenizer and the text tower
        text = timed(lambda: pipe.clip.model.encode_text(pipe.clip.tokenizer([PROMPT] * args.batch)))

    def ms(xs: list[float]) -> dict[str, float]:
        return {"median_ms": round(1000 * statistics.median(xs), 1), "min_ms": round(1000 * min(xs), 1)}

    report = {
        "model": pipe.config.name,
        "weights": str(args.weights) if args.weights else "random",
        "image": f"{size}x{size}",
        "batch": args.batch,
        "steps": sampler.steps,
        "guidance_scale": sampler.guidance_scale,
        "typical_filtering": sampler.typical_filtering,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "params": {
            "denoiser": params(pipe.denoiser),
            "vqgan": params(pipe.vqgan),
            "clip": params(pipe.clip),
        },
        "generate": ms(total),
        "sample_tokens": ms(sample),
        "vqgan_decode": ms(decode),
        "clip_encode_text": ms(text),
        "per_image_ms": round(1000 * statistics.median(total) / args.batch, 1),
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
