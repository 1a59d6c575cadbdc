"""Where a seed's numbers first depend on its batch, on a CUDA card, and what making them not costs.

`benchmarks/sampling_sensitivity.py` shows why it matters: the sampler turns any difference in the logits,
however small, into a differing token now and then. Three parts:

- layers: paella-mini's denoiser and text tower run the rows of one image (two: the guided pair the sampler
  runs) alone and inside a batch of 32, compared bit for bit: every leaf module of the eager denoiser (in
  call order, the first that differs names the kernel to replace), the compiled denoiser's logits and the
  text tower's embeddings; in float16 (the fast path's), float16 with fp32 split-K reductions, bfloat16
  and float32;
- tokens: the fast path on paella-mini (compiled, CUDA graphs), every seed alone against the same seed in
  its batch of 32 (with the batch's cached text embeddings, as `pipeline_gpu.py` measures, and with the
  cache emptied, as the service meets a new prompt), and a batch of mixed guidance and temperatures
  against each alone; with the denoiser's upsampling as the model's ConvTranspose2d (cuDNN's on CUDA: the
  first layer whose rows depended on their batch in an H200 run of 2026-12-07, bfloat16, eager:
  `up_blocks.1.3`) and as `MatmulUpsample`, the candidate to replace it; and with prompts encoded
  together (the model's) and in chunks of `TEXT_ROWS`, the candidate for the text tower;
- cost: Paella v1's compiled denoiser (random weights, float16) at 2 and 128 rows (one and 64 guided
  images), both upsamplings, CUDA events; its text tower for 1, 8 and 64 prompts, together and in
  chunks; on a CPU, paella-mini's eager denoiser and text tower in float32.

    PYTHONPATH=. python3 benchmarks/batch_invariance.py --out $OUT/batch_invariance.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.support import differing, generations, mixed_batch, tokens_in_batches, wall_ms
from model.clip import TEXT_ROWS, ClipEncoder
from model.config import PAELLA_V1
from model.denoiser import Denoiser, Upsample, upsample_by_matmul
from model.graphs import BUCKETS, BucketGraphs, compile_batched
from model.pipeline import Pipeline
from training import world

FAST_DTYPE = torch.float16  # what PAELLA_DTYPE=auto picks on CUDA


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


# Rows run "alone": the two a guided image puts through the denoiser. One would meet Dynamo's own graph for
# a batch of one (sizes 0 and 1 are specialised), which the guided fast path never runs.
ALONE = 2


def denoiser_report(pipe: Pipeline, tokens: Tensor, cond: Tensor, r: Tensor) -> dict[str, Any]:
    den = pipe.denoiser
    with torch.inference_mode():
        batch = leaf_outputs(den, lambda: den(tokens, cond, r), ALONE)
        alone = leaf_outputs(den, lambda: den(tokens[:ALONE], cond[:ALONE], r[:ALONE]), ALONE)
        layers = [{"module": name, **compared(a, b)} for (name, a), (_, b) in zip(batch, alone, strict=True)]
        eager = compared(den(tokens, cond, r)[:ALONE], den(tokens[:ALONE], cond[:ALONE], r[:ALONE]))
        if tokens.is_cuda:  # the fast path's Inductor kernels (on a CPU, compiling is not worth the wait)
            compiled = compile_batched(den)
            fast: dict[str, float] | None = compared(
                compiled(tokens, cond, r)[:ALONE], compiled(tokens[:ALONE], cond[:ALONE], r[:ALONE])
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


class MatmulUpsample(Upsample):
    """The model's `Upsample` computing by `upsample_by_matmul` on every device (the model's does on CUDA
    only), so that a CPU run can weigh it too."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]  # no output_size: always twice the input
        return upsample_by_matmul(x, self.weight, self.bias)


@contextmanager
def upsampling(den: Denoiser, kind: type[nn.ConvTranspose2d]) -> Iterator[None]:
    """The denoiser's upsampling layers computed as `kind` (same parameters) for a while."""
    layers = [m for m in den.modules() if isinstance(m, nn.ConvTranspose2d)]
    before = [type(m) for m in layers]
    for m in layers:
        m.__class__ = kind
    try:
        yield
    finally:
        for m, k in zip(layers, before, strict=True):
            m.__class__ = k


UPSAMPLINGS: dict[str, type[nn.ConvTranspose2d]] = {
    "ConvTranspose2d (cuDNN's on CUDA, oneDNN's on a CPU; the model's on CUDA until 2026-12-07)": (
        nn.ConvTranspose2d
    ),
    "upsample_by_matmul (the model's on CUDA since)": MatmulUpsample,
}

# (upsampling, text_rows) of the tokens part: the model's on CUDA since 2026-12-07, its path before, each
# of the two changes alone (in this order: a call cut short keeps the ones that decide)
VARIANTS: dict[str, tuple[type[nn.ConvTranspose2d], int | None]] = {
    f"MatmulUpsample, prompts in chunks of {TEXT_ROWS} (the model's on CUDA)": (MatmulUpsample, TEXT_ROWS),
    "ConvTranspose2d, prompts encoded together (the model's on CUDA until 2026-12-07)": (
        nn.ConvTranspose2d,
        None,
    ),
    "MatmulUpsample, prompts encoded together": (MatmulUpsample, None),
    f"ConvTranspose2d, prompts in chunks of {TEXT_ROWS}": (nn.ConvTranspose2d, TEXT_ROWS),
}


def tokens_report(
    weights: Path, device: str, images: int, kind: type[nn.ConvTranspose2d], text_rows: int | None
) -> dict[str, Any]:
    """The fast path's tokens, every seed alone against in its batch of 32 (with the batch's cached text
    embeddings, as `pipeline_gpu.py` measures, and with the cache emptied first, as the service meets an
    uncached prompt), and a mixed batch against each alone."""
    pipe = Pipeline.from_folder(
        weights, device=device, dtype=FAST_DTYPE if device == "cuda" else torch.float32
    )
    prompts = world.eval_prompts(images, 0).prompts
    size, sampler = pipe.config.image_size, pipe.config.sampler
    batch = generations(prompts, size, sampler)
    with upsampling(pipe.denoiser, kind):
        pipe.accelerate(compile=device == "cuda", text_rows=text_rows)
        together, alone = tokens_in_batches(pipe, batch), tokens_in_batches(pipe, batch, 1)
        pipe.clip.clear_cache()
        fresh = tokens_in_batches(pipe, batch, 1)
        mixed = mixed_batch(pipe, prompts[:32], sampler)
    return {
        "batch_invariance_token_agreement": round((alone == together).float().mean().item(), 5),
        "images_differing": differing(alone, together),
        "uncached_text_batch_invariance_token_agreement": round((fresh == together).float().mean().item(), 5),
        "uncached_text_images_differing": differing(fresh, together),
        "mixed_batch_invariance_token_agreement": mixed,
    }


def text_cost_report(args: argparse.Namespace) -> dict[str, Any]:
    """Milliseconds to encode 1, 8 and 64 distinct prompts (tokenizing included, no cache), through CUDA
    graphs per bucket as the fast path does, with prompts encoded together, in chunks of `TEXT_ROWS`, and
    in chunks through the compiled tower (the candidate `Pipeline.accelerate(compile_text=True)`, with
    whether a prompt's embedding is the same bits alone and among ten others, and its largest difference
    from the eager tower's): on CUDA Paella v1's text tower (random weights, float16); on a CPU
    paella-mini's."""
    cuda = args.device == "cuda"
    if cuda:
        torch.manual_seed(0)
        with torch.device("cuda"):
            clip = ClipEncoder(PAELLA_V1.clip).to(FAST_DTYPE).eval()
    else:
        clip = Pipeline.from_folder(args.weights, device="cpu", dtype=torch.float32).clip
        clip.cache_size = 0  # every call encodes
    prompts = world.eval_prompts(64, 0).prompts
    out: dict[str, Any] = {}
    for rows, compiled in ((None, False), (TEXT_ROWS, False), (TEXT_ROWS, True)):
        clip.text_rows = rows
        tower = compile_batched(clip.model.encode_text) if compiled else clip.model.encode_text
        clip.text_tower = BucketGraphs(tower, BUCKETS if rows is None else (rows,), capture=cuda)
        timings = {}
        with torch.inference_mode():
            for n in (1, 8, 64):
                for _ in range(3):
                    clip.encode_text(prompts[:n])
                times = wall_ms(lambda: clip.encode_text(prompts[:n]), args.repeats, cuda)  # noqa: B023
                timings[n] = round(statistics.median(times), 3)
        name = ("together" if rows is None else f"chunks of {rows}") + (", compiled" if compiled else "")
        if compiled:  # the candidate's bits: a prompt alone as among the others
            with torch.inference_mode():
                clip.clear_cache()
                among = clip.encode_text(prompts[:11])
                clip.clear_cache()
                timings["same_bits_alone"] = bool(torch.equal(clip.encode_text(prompts[9:10])[0], among[9]))
                eager = clip.model.encode_text(clip.tokenizer(prompts[:11]).to(among.device))
                timings["max_abs_vs_eager"] = (among - eager).abs().max().item()
        out[name] = timings
        print("text", name, json.dumps(timings), flush=True)
    return out


def cost_report(args: argparse.Namespace) -> dict[str, Any]:
    """Milliseconds per call of the denoiser at each number of rows, with each upsampling, one after the
    other in one process: on CUDA Paella v1's, compiled and replayed from a CUDA graph (random weights,
    float16, CUDA events; until 2026-12-08 launched without a graph); on a CPU
    paella-mini's, eager in float32 (the embedded default's)."""
    cuda = args.device == "cuda"
    if cuda:
        torch.manual_seed(0)
        config, grid = PAELLA_V1.denoiser, PAELLA_V1.grid(256, 256)
        with torch.device("cuda"):
            den = Denoiser(config).to(FAST_DTYPE).eval().requires_grad_(False)
    else:
        pipe = Pipeline.from_folder(args.weights, device="cpu", dtype=torch.float32)
        den, config = pipe.denoiser, pipe.config.denoiser
        grid = pipe.config.grid(pipe.config.image_size, pipe.config.image_size)
    dtype = next(den.parameters()).dtype
    out: dict[str, Any] = {}
    for name, kind in UPSAMPLINGS.items():
        with upsampling(den, kind), torch.inference_mode():
            run = compile_batched(den) if cuda else den
            timings = {}
            for n in args.rows:
                tokens = torch.randint(0, config.num_labels, (n, *grid), device=args.device)
                cond = torch.randn(n, config.c_clip, device=args.device, dtype=dtype)
                r = torch.rand(n, device=args.device)
                for _ in range(3):
                    run(tokens, cond, r)
                if cuda:  # replays of a CUDA graph (as the fast path runs it), timed by CUDA events
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        run(tokens, cond, r)
                    times = []
                    for _ in range(args.repeats):
                        events = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
                        events[0].record()
                        graph.replay()
                        events[1].record()
                        events[1].synchronize()
                        times.append(events[0].elapsed_time(events[1]))
                    del graph
                else:
                    times = wall_ms(lambda: run(tokens, cond, r), args.repeats, cuda=False)  # noqa: B023
                timings[n] = round(statistics.median(times), 3)
        if cuda:
            torch._dynamo.reset()  # the next variant compiles its own graph
        out[name] = timings
        print(name, json.dumps(timings), flush=True)
    return out


def text_report(pipe: Pipeline, prompts: list[str]) -> dict[str, float]:
    clip = pipe.clip
    ids = clip.tokenizer(prompts).to(pipe.device)
    with torch.inference_mode():
        return compared(clip.model.encode_text(ids)[:1], clip.model.encode_text(ids[:1]))


def layers_report(args: argparse.Namespace) -> dict[str, Any]:
    prompts = world.eval_prompts(args.batch, 0).prompts
    result: dict[str, Any] = {}
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (
        matmul.allow_fp16_reduced_precision_reduction,
        matmul.allow_bf16_reduced_precision_reduction,
        cudnn.conv.fp32_precision,
    )
    for name, dtype, reduced in (
        ("float16", torch.float16, True),
        ("float16, fp32 split-K reductions", torch.float16, False),
        ("bfloat16", torch.bfloat16, True),
        ("float32 (no TF32)", torch.float32, True),
    ):
        matmul.allow_fp16_reduced_precision_reduction = reduced
        matmul.allow_bf16_reduced_precision_reduction = reduced
        cudnn.conv.fp32_precision = "ieee" if dtype == torch.float32 else before[2]
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
    (
        matmul.allow_fp16_reduced_precision_reduction,
        matmul.allow_bf16_reduced_precision_reduction,
        cudnn.conv.fp32_precision,
    ) = before
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, default=Path("weights/paella-mini"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=128, help="tokens: seeds, in batches of 32")
    parser.add_argument("--rows", type=int, nargs="+", default=[2, 128], help="cost: denoiser batch sizes")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("layers", "tokens", "cost", "text"),
        default=["layers", "tokens", "cost"],
        help="cost: the denoiser's and the text tower's; text: the text tower's alone",
    )
    parser.add_argument("--device", default="cuda", help="cpu: paella-mini's eager path (embedded default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/batch_invariance.json"))
    args = parser.parse_args()
    card = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    result: dict[str, Any] = {"card": card, "torch": torch.__version__, "batch": args.batch}

    def save() -> None:  # after every part: a call cut short keeps what it measured
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    if "layers" in args.parts:
        result["layers"] = layers_report(args)
        save()
    if "tokens" in args.parts:
        result["tokens"] = {}
        for name, (kind, rows) in VARIANTS.items():
            report = tokens_report(args.weights, args.device, args.images, kind, rows)
            result["tokens"][name] = report
            print(name, json.dumps(report), flush=True)
            save()
    if "cost" in args.parts:
        result["cost_ms"] = cost_report(args)
        save()
    if "cost" in args.parts or "text" in args.parts:
        result["text_cost_ms"] = text_cost_report(args)
        save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
