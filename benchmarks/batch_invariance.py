"""Where a seed's numbers first depend on its batch, on a CUDA card: paella-mini's denoiser and text tower
run one row alone and the same row inside a batch of 32, and their outputs are compared bit for bit.

`benchmarks/sampling_sensitivity.py` shows why it matters: the sampler turns any difference in the logits,
however small, into a differing token now and then. This script finds which layers make the difference:
for the eager denoiser, every leaf module's output for row 0 (in call order, the first that differs
names the kernel to replace); for the compiled one and the text tower, the end result. Each in bfloat16
and float32, and in bfloat16 again with cuBLAS's reduced-precision split-K reductions off.

    PYTHONPATH=. python3 benchmarks/batch_invariance.py --out $OUT/batch_invariance.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model.graphs import compile_batched
from model.pipeline import Pipeline
from training import world


def compared(a: Tensor, b: Tensor) -> dict[str, float]:
    """How two results of one row differ: the share of values not bitwise equal, the largest difference
    relative to the largest value."""
    a, b = a.float(), b.float()
    scale = a.abs().max().clamp_min(1e-30)
    return {
        "differing_share": round((a != b).float().mean().item(), 6),
        "max_relative": float(f"{((a - b).abs().max() / scale).item():.3g}"),
    }


def leaf_outputs(model: nn.Module, run: Callable[[], Any], rows: int) -> list[tuple[str, Tensor]]:
    """Every leaf module's output (its first `rows` rows), in call order, for one call of `run`."""
    out: list[tuple[str, Tensor]] = []
    hooks = []
    for name, module in model.named_modules():
        if next(module.children(), None) is None:

            def hook(_m: nn.Module, _i: Any, o: Any, name: str = name) -> None:
                if isinstance(o, Tensor):
                    out.append((name, o[:rows].detach().clone()))

            hooks.append(module.register_forward_hook(hook))
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return out


def denoiser_report(pipe: Pipeline, tokens: Tensor, cond: Tensor, r: Tensor) -> dict[str, Any]:
    den = pipe.denoiser
    with torch.inference_mode():
        batch = leaf_outputs(den, lambda: den(tokens, cond, r), 1)
        alone = leaf_outputs(den, lambda: den(tokens[:1], cond[:1], r[:1]), 1)
        layers = [{"module": name, **compared(a, b)} for (name, a), (_, b) in zip(batch, alone, strict=True)]
        eager = compared(den(tokens, cond, r)[:1], den(tokens[:1], cond[:1], r[:1]))
        if tokens.is_cuda:  # the fast path's Inductor kernels (on a CPU, compiling is not worth the wait)
            compiled = compile_batched(den)
            fast: dict[str, float] | None = compared(
                compiled(tokens, cond, r)[:1], compiled(tokens[:1], cond[:1], r[:1])
            )
        else:
            fast = None
    first = next((row for row in layers if row["differing_share"] > 0), None)
    return {
        "eager_logits": eager,
        "compiled_logits": fast,
        "first_differing_module": first,
        "modules_differing": sum(row["differing_share"] > 0 for row in layers),
        "modules": len(layers),
        "layers": layers,
    }


def text_report(pipe: Pipeline, prompts: list[str]) -> dict[str, float]:
    clip = pipe.clip
    ids = clip.tokenizer(prompts).to(pipe.device)
    with torch.inference_mode():
        return compared(clip.model.encode_text(ids)[:1], clip.model.encode_text(ids[:1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, default=Path("weights/paella-mini"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cuda", help="cpu: a check of the script itself")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/batch_invariance.json"))
    args = parser.parse_args()
    card = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    prompts = world.eval_prompts(args.batch, 0).prompts
    result: dict[str, Any] = {"card": card, "torch": torch.__version__, "batch": args.batch}
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = matmul.allow_bf16_reduced_precision_reduction, cudnn.conv.fp32_precision
    for name, dtype, reduced in (
        ("bfloat16", torch.bfloat16, True),
        ("bfloat16, fp32 split-K reductions", torch.bfloat16, False),
        ("float32 (no TF32)", torch.float32, True),
    ):
        matmul.allow_bf16_reduced_precision_reduction = reduced
        cudnn.conv.fp32_precision = "ieee" if dtype == torch.float32 else before[1]
        pipe = Pipeline.from_folder(args.weights, device=args.device, dtype=dtype)
        g = torch.Generator(device=args.device).manual_seed(0)
        size = pipe.config.grid(pipe.config.image_size, pipe.config.image_size)
        shape = (args.batch, *size)
        tokens = torch.randint(0, pipe.config.denoiser.num_labels, shape, generator=g, device=args.device)
        with torch.inference_mode():
            cond = pipe.clip.encode_text(prompts).to(dtype)
        r = torch.rand(args.batch, generator=g, device=args.device)
        report = {"text": text_report(pipe, prompts), "denoiser": denoiser_report(pipe, tokens, cond, r)}
        summary = {k: v for k, v in report["denoiser"].items() if k != "layers"}
        print(name, json.dumps({"text": report["text"], **summary}), flush=True)
        result[name] = report
        del pipe
        if args.device == "cuda":
            torch.cuda.empty_cache()
    matmul.allow_bf16_reduced_precision_reduction, cudnn.conv.fp32_precision = before
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
