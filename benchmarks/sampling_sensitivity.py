"""How far a trained model's tokens move when its logits move a little: the floor that any numerically
different path meets (bfloat16 against float32, another batch size's kernels, another summation order).

Every denoiser call's logits are multiplied by (1 + eps * N(0, 1)), independently per value, and the
tokens of the same seeds are compared with the unperturbed run's: the share of equal tokens, how many
images differ at all, and the largest share of any one image. A differing draw early in the loop changes
every step after it, so the images that differ tell how chaotic the sampler is. For scale: bfloat16 keeps
8 significant bits, so one rounding moves a value by up to 2^-9 (about 2e-3) of itself; float32 by 6e-8.
Runs on the CPU, in float32, with the folder's sampler and again with typical filtering off.

    PYTHONPATH=. python benchmarks/sampling_sensitivity.py --weights weights/paella-mini --images 128
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.support import differing, generations, tokens_in_batches
from model.config import SamplerConfig
from model.pipeline import Pipeline
from training import world


class Jittered(nn.Module):
    """A denoiser whose logits are multiplied by (1 + eps * N(0, 1)), from its own seeded generator."""

    def __init__(self, inner: nn.Module, eps: float, seed: int = 1):
        super().__init__()
        self.inner = inner
        self.eps = eps
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: Tensor, cond: Tensor, r: Tensor) -> Tensor:
        y = self.inner(x, cond, r)
        noise = torch.randn(y.shape, generator=self.generator).to(y.device)
        return y * (1 + self.eps * noise)


def tokens(pipe: Pipeline, prompts: list[str], sampler: SamplerConfig) -> Tensor:
    return tokens_in_batches(pipe, generations(prompts, pipe.config.image_size, sampler))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, default=Path("weights/paella-mini"))
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--eps", type=float, nargs="+", default=[1e-6, 1e-5, 1e-4, 1e-3, 4e-3])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sampling_sensitivity_cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    pipe = Pipeline.from_folder(args.weights)
    prompts = world.eval_prompts(args.images, 0).prompts
    plain = pipe.denoiser
    own = pipe.config.sampler
    samplers = {"folder's sampler": own, "typical filtering off": own.replace(typical_filtering=False)}
    rows: list[dict[str, Any]] = []
    for name, sampler in samplers.items():
        reference = tokens(pipe, prompts, sampler)
        for eps in args.eps:
            pipe.denoiser = Jittered(plain, eps)
            try:
                got = tokens(pipe, prompts, sampler)
            finally:
                pipe.denoiser = plain
            shares = differing(reference, got)
            row = {
                "sampler": name,
                "eps": eps,
                "token_agreement": round((got == reference).float().mean().item(), 5),
                "images_differing": len(shares),
                "largest_share": shares[0] if shares else 0.0,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {
        "model": str(args.weights),
        "images": args.images,
        "sampler": {k: str(v) for k, v in vars(own).items()},
        "seconds": round(time.time() - started, 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
