"""Time one 128 x 128 picture through the Pipeline on the CPU (8 steps with guidance by default).

Uses the weight folders given, else paella-mini's architecture with random weights (same cost); several
folders are timed in one run, round robin, so their figures compare. Prints the numbers and writes them
to results/pipeline_cpu.json.

    PYTHONPATH=. python benchmarks/pipeline_cpu.py [--weights weights/paella-mini [--weights B]] [--threads 2]
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
from model import sampler
from model.ops import Generate
from model.pipeline import Pipeline
from model.weights import write_random_folder
from training import world
from training.mini import PAELLA_MINI

PROMPT = "a large red circle in the top left on a blue background"

CHECKED_SEEDS = 32  # variants of one model: their tokens for these seeds compared


def build(weights: Path | None) -> Pipeline:
    if weights is not None:
        return Pipeline.from_folder(weights)
    with tempfile.TemporaryDirectory() as tmp:
        return Pipeline.from_folder(write_random_folder(tmp, PAELLA_MINI, world.vocabulary()))


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights",
        type=Path,
        action="append",
        help="a weight folder; give it more than once to time several models in one run (interleaved)",
    )
    parser.add_argument(
        "--typical-candidates",
        type=int,
        nargs="+",
        default=[sampler.TYPICAL_CANDIDATES],
        help="model.sampler.TYPICAL_CANDIDATES; several: each timed (interleaved), 0 sorts every row",
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/pipeline_cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folders: list[Path | None] = list(args.weights) if args.weights else [None]
    pipes = [(build(w), w) for w in folders]
    models = [Model(p, w, args.steps, args.batch, k) for p, w in pipes for k in args.typical_candidates]
    for m in models:
        m.warm_up()
    for _ in range(args.repeats):  # round robin, so a slower spell of the machine hits every model alike
        for m in models:
            m.time_once()
    reports = [m.report() for m in models]
    for report_, model in zip(reports, models, strict=True):  # each variant's tokens against the first's
        first = next(m for m in models if m.pipe is model.pipe)
        report_[f"tokens_of_{CHECKED_SEEDS}_seeds_equal_to_first_variant"] = torch.equal(
            model.checked, first.checked
        )
    report = {
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "models": reports,
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


class Model:
    """One weight folder's pipeline and its timings: the whole picture, sampling, decoding, text encoding."""

    def __init__(self, pipe: Pipeline, weights: Path | None, steps: int, batch: int, candidates: int):
        self.pipe, self.weights, self.batch_size, self.candidates = pipe, weights, batch, candidates
        self.sampler = dataclasses.replace(pipe.config.sampler, steps=steps)
        size = pipe.config.image_size
        self.batch = draws([Generate(PROMPT, size, size)] * batch, list(range(batch)), self.sampler)
        self.times: dict[str, list[float]] = {"generate": [], "sample_tokens": [], "vqgan_decode": []}
        self.times["clip_encode_text"] = []

    def warm_up(self) -> None:
        sampler.TYPICAL_CANDIDATES = self.candidates
        self.pipe.images(self.batch)
        self.tokens = self.pipe.tokens(self.batch)
        size = self.pipe.config.image_size
        seeds = range(CHECKED_SEEDS)
        self.checked = self.pipe.tokens(
            draws([Generate(PROMPT, size, size)] * len(seeds), seeds, self.sampler)
        )

    def time_once(self) -> None:
        pipe, batch = self.pipe, self.batch
        sampler.TYPICAL_CANDIDATES = self.candidates
        text = pipe.clip.tokenizer([PROMPT] * self.batch_size)
        for name, fn in (
            ("generate", lambda: pipe.images(batch)),
            ("sample_tokens", lambda: pipe.tokens(batch)),
            ("vqgan_decode", lambda: pipe.decode(self.tokens)),
            ("clip_encode_text", lambda: pipe.clip.model.encode_text(text)),  # uncached: the text tower
        ):
            with torch.inference_mode():
                start = time.perf_counter()
                fn()
                self.times[name].append(time.perf_counter() - start)

    def report(self) -> dict[str, object]:
        def ms(xs: list[float]) -> dict[str, float]:
            return {"median_ms": round(1000 * statistics.median(xs), 1), "min_ms": round(1000 * min(xs), 1)}

        size = self.pipe.config.image_size
        return {
            "model": self.pipe.config.name,
            "weights": str(self.weights) if self.weights else "random",
            "image": f"{size}x{size}",
            "batch": self.batch_size,
            "steps": self.sampler.steps,
            "guidance_scale": self.sampler.guidance_scale,
            "typical_filtering": self.sampler.typical_filtering,
            "typical_candidates": self.candidates,
            "params": {
                "denoiser": params(self.pipe.denoiser),
                "vqgan": params(self.pipe.vqgan),
                "clip": params(self.pipe.clip),
            },
            **{name: ms(xs) for name, xs in self.times.items()},
            "per_image_ms": round(1000 * statistics.median(self.times["generate"]) / self.batch_size, 1),
        }


if __name__ == "__main__":
    main()
