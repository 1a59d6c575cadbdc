"""Pipeline: operations in, tokens out; tokens in, pictures out. Glue between CLIP, the sampler, the
denoiser and the VQGAN (Rampas et al. 2022).

`tokens(draws)` runs any mix of operations that share a canvas and a step count as one batch: every
image brings its own conditioning, starting tokens, mask and sampler settings, and its seed alone
decides it. `decode(tokens)` turns token grids into pictures; `render(draws, previews)` does both and
also decodes chosen steps' predictions of the same sampling pass (previews).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from model.clip import TEXT_ROWS, ClipEncoder
from model.config import ModelConfig
from model.denoiser import Denoiser
from model.folder import read_extra
from model.graphs import BUCKETS, BucketGraphs, bucket, compile_batched
from model.kernels import available, pick_codes_fused
from model.launched import Launched
from model.ops import (
    Composition,
    Draw,
    Generate,
    Inpaint,
    Interpolation,
    Outpaint,
    Picture,
    StructuralEdit,
    Variation,
)
from model.pixels import pil_images, rgb8
from model.rows import build_rows, signed
from model.sampler import Picker, Rows, Sampled, pick_codes, sample
from model.transfer import to_device
from model.vqgan import VQGAN
from model.weights import load_module, read_folder


class Pipeline:
    """Paella v1 text-to-image and its image operations, batched and seeded.

    Args:
        config: the model's configuration.
        denoiser, vqgan, clip: the networks; placed on `device` (in `dtype` if given) and frozen here.
        image_denoiser: the denoiser fine-tuned on CLIP image embeddings; when given, variations run on it
            (eagerly: the fast path compiles the text denoiser only), in batches of their own.
        device: where the networks live.
        dtype: the networks' floating-point type; None keeps theirs.
        exact_vqgan: run the VQGAN image by image so that no pixel or token depends on the batch (batched
            convolutions pick kernels by batch size); None = on the CPU only.
        pick: the sampler's per-step code picker (see `model.sampler.sample`).
    """

    def __init__(
        self,
        config: ModelConfig,
        denoiser: Denoiser,
        vqgan: VQGAN,
        clip: ClipEncoder,
        *,
        image_denoiser: Denoiser | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        exact_vqgan: bool | None = None,
        pick: Picker = pick_codes,
    ):
        self.config = config
        self.device = torch.device(device)
        for module in (denoiser, vqgan, clip, image_denoiser):  # the one place modules are placed and frozen
            if module is not None:
                module.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        self.denoiser, self.vqgan, self.clip = denoiser, vqgan, clip
        self.image_denoiser = image_denoiser
        self.exact_vqgan = self.device.type == "cpu" if exact_vqgan is None else exact_vqgan
        self.pick = pick
        self.buckets: tuple[int, ...] | None = None  # set by `accelerate`
        self._sample: Callable[..., Sampled] | None = None
        self._decode: Callable[[Tensor], Tensor] = self.vqgan.decode
        self._encode: Callable[[Tensor], Tensor] = self.vqgan.encode
        self._graphs: list[BucketGraphs] = []  # the fast path's, by `accelerate`
        self.graph_events: Counter[str] = Counter()  # `BucketGraphs.events`, of all of them

    @classmethod
    def from_folder(
        cls, path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> Pipeline:
        """Load a weight folder (`model.folder`) strictly; nothing is downloaded."""
        config, tensors = read_folder(path)
        vocab = json.loads(read_extra(path, "vocab.json")) if config.clip.tokenizer == "words" else None
        with torch.device(device):  # initialise the parameters where they will live
            denoiser = load_module(Denoiser(config.denoiser), tensors["denoiser"], dtype=dtype)
            vqgan = load_module(VQGAN(config.vqgan), tensors["vqgan"], dtype=dtype)
            clip = ClipEncoder(config.clip, vocab, cache_size=1024)
            load_module(clip.model, tensors["clip"], dtype=dtype)
            image = tensors.get("image_denoiser")
            image_denoiser = (
                None if image is None else load_module(Denoiser(config.denoiser), image, dtype=dtype)
            )
        return cls(config, denoiser, vqgan, clip, image_denoiser=image_denoiser, device=device, dtype=dtype)

    # ---- the two entries

    def accelerate(
        self,
        buckets: Sequence[int] = BUCKETS,
        *,
        compile: bool = True,
        capture: bool | None = None,
        autotune: bool = False,
        text_rows: int | Literal["cuda"] | None = "cuda",
        compile_text: bool = False,
    ) -> None:
        """The fast path: the denoiser and the VQGAN decoder compiled for the native canvas (torch.compile,
        every batch size; other canvases and spatial conditions run them uncompiled rather than wait for a
        compilation), the fused Triton picker, and CUDA graphs per batch bucket of the sampling loop, the
        text tower, the image tower, the decoder and the encoder, captured on first use (`warmup` captures
        them ahead of traffic): the pictures edits and variations bring are encoded in one replay each,
        not in hundreds of launches while the device waits.

        `capture` defaults to CUDA only; with capture False, batches still go through the buckets' padding
        (to check it on a CPU). `autotune` lets cuDNN time its convolution algorithms for every new shape
        (`cudnn.benchmark`); off, cuDNN's heuristics choose: on the H100 the same speed at batch 1 and 64,
        and a restart's warm-up 30 s instead of 114 s (`benchmarks/README.md`). `text_rows`: prompts encoded
        in chunks of that many rows (`ClipEncoder.text_rows`); "cuda", of `TEXT_ROWS` on CUDA only.
        `compile_text`: the text tower through torch.compile too (a candidate, off until measured).
        """
        cuda = self.device.type == "cuda"
        self.clip.text_rows = (TEXT_ROWS if cuda else None) if text_rows == "cuda" else text_rows
        capture = cuda if capture is None else capture
        if available(self.device):
            self.pick = pick_codes_fused
        if cuda:
            torch.backends.cudnn.benchmark = autotune
            self.vqgan.to(memory_format=torch.channels_last)
        native = self.config.grid(self.config.image_size, self.config.image_size)
        compiled = compile_batched(self.denoiser) if compile else self.denoiser
        compiled_decode = compile_batched(self.vqgan.decode) if compile else self.vqgan.decode
        num_labels, pick = self.config.denoiser.num_labels, self.pick

        def run(*tensors: Tensor, **facts: Any) -> Sampled:
            rows = Rows.join(tensors, facts)
            usual = tuple(rows.init.shape[1:]) == native and rows.cond.dim() == 2  # compiled for these
            return sample(compiled if usual else self.denoiser, rows, num_labels=num_labels, pick=pick)

        def decode(tokens: Tensor) -> Tensor:
            return (compiled_decode if tuple(tokens.shape[1:]) == native else self.vqgan.decode)(tokens)

        pool = torch.cuda.graph_pool_handle() if capture else None
        self.buckets = tuple(sorted(buckets))

        def graphs(fn: Callable[..., Any], sizes: Sequence[int] = buckets) -> BucketGraphs:
            return BucketGraphs(fn, sizes, pool=pool, capture=capture, events=self.graph_events)

        self._sample, self._decode, self._encode = graphs(run), graphs(decode), graphs(self.vqgan.encode)
        clip = self.clip
        tower = compile_batched(clip.model.encode_text) if compile_text else clip.model.encode_text
        text = graphs(tower, buckets if clip.text_rows is None else (clip.text_rows,))
        clip.text_tower, clip.image_tower = text, graphs(clip.model.encode_image)
        self._graphs = [self._sample, self._decode, self._encode, clip.text_tower, clip.image_tower]
        self.exact_vqgan = False

    @torch.inference_mode()
    def tokens(self, draws: Sequence[Draw]) -> Tensor:
        """Token grids [B, h, w] int64 of draws sharing one canvas and one step count, as one batch (of
        variations only, or of no variation, when there is an image denoiser)."""
        return self._sampled(self.rows(draws), draws).tokens

    def _sampled(self, rows: Rows, draws: Sequence[Draw]) -> Sampled:
        """`sample(rows)`, on the image denoiser when the draws are variations and there is one."""
        variations = sum(isinstance(d.op, Variation) for d in draws)
        if self.image_denoiser is None or variations == 0:
            return self.sample(rows)
        if variations < len(draws):
            raise ValueError("variations run on the image denoiser: batch them apart from other operations")
        return sample(self.image_denoiser, rows, num_labels=self.config.denoiser.num_labels, pick=self.pick)

    @torch.inference_mode()
    def sample(self, rows: Rows) -> Sampled:
        """The sampling steps over prepared rows (`rows(draws)`): token grids [B, h, w] int64, and the
        predictions of the steps in `rows.snapshots`."""
        if self._sample is not None:
            tensors, facts = rows.split()
            facts["first_step"] = 0  # one graph whatever the rows' start steps: late rows wait masked
            return self._sample(*tensors, **facts)
        return sample(self.denoiser, rows, num_labels=self.config.denoiser.num_labels, pick=self.pick)

    @torch.inference_mode()
    def decode(self, tokens: Tensor) -> list[Image.Image]:
        """PIL RGB images of token grids [B, h, w]."""
        return pil_images(self._vqgan(self._decode, tokens))

    def images(self, draws: Sequence[Draw]) -> list[Image.Image]:
        """`decode(tokens(draws))`."""
        return self.decode(self.tokens(draws))

    def render(
        self,
        draws: Sequence[Draw],
        previews: Sequence[tuple[int, ...]],
        timings: dict[str, float] | None = None,
    ) -> tuple[list[Image.Image], list[list[Image.Image]]]:
        """The draws' pictures and, for draw i, the pictures of its predictions after the steps in
        `previews[i]`: one sampling pass; the pictures decoded as `images` decodes them, the previews in a
        second batch. `collect(launch(...))`.

        `timings`, when given, receives the wall seconds of the stages: `prepare` (the host building the
        rows and launching the work), `rows` (the part of `prepare` that builds the rows: prompts and
        pictures encoded, per-row inputs), `device` (waiting for the device to finish it), `readback`
        (wrapping the pictures), and on CUDA `gpu` (the device's own seconds on the batch, by events). No
        synchronisation is added to measure them."""
        return self.collect(self.launch(draws, previews), timings)

    @torch.inference_mode()
    def launch(self, draws: Sequence[Draw], previews: Sequence[tuple[int, ...]]) -> Launched:
        """Queue a batch's work on the device (`render`'s), down to the copy of its pictures into host memory,
        and return without waiting for it: the host can prepare the next batch while this one runs. Work
        launched later queues behind it; `collect` waits for this batch's copy alone."""
        began = time.perf_counter()
        started = None
        if self.device.type == "cuda":
            started = torch.cuda.Event(enable_timing=True)
            started.record()
        steps = tuple(sorted({s for wanted in previews for s in wanted}))
        prepared = dataclasses.replace(self.rows(draws), snapshots=steps)
        built = time.perf_counter()
        out = self._sampled(prepared, draws)
        x = self._vqgan(self._decode, out.tokens)
        picks = [(i, steps.index(s)) for i, wanted in enumerate(previews) for s in wanted]
        if picks:
            rows, columns = (to_device(torch.tensor(p), self.device) for p in zip(*picks, strict=True))
            x = torch.cat([x, self._vqgan(self._decode, out.snapshots[rows, columns])])
        pixels = rgb8(x)
        done = None
        if pixels.is_cuda:  # into pinned host memory, behind the batch's work on the stream
            pixels = pixels.to("cpu", non_blocking=True)
            done = torch.cuda.Event(enable_timing=True)
            done.record()
        counts = [len(wanted) for wanted in previews]
        return Launched(pixels, done, counts, time.perf_counter() - began, built - began, started)

    def collect(
        self, launched: Launched, timings: dict[str, float] | None = None
    ) -> tuple[list[Image.Image], list[list[Image.Image]]]:
        """A launched batch's pictures and previews, once its copy to the host has arrived."""
        waited = time.perf_counter()
        if launched.done is not None:
            launched.done.synchronize()
        arrived = time.perf_counter()
        arrays = launched.pixels.numpy()
        count = len(launched.previews)
        pictures = [Image.fromarray(a, "RGB") for a in arrays[:count]]
        decoded = iter(Image.fromarray(a, "RGB") for a in arrays[count:])
        previews = [[next(decoded) for _ in range(n)] for n in launched.previews]
        if timings is not None:
            timings |= {"rows": launched.rows_s, "prepare": launched.prepare_s, "device": arrived - waited}
            gpu = launched.device_seconds()
            if gpu is not None:
                timings["gpu"] = gpu
            timings["readback"] = time.perf_counter() - arrived
        return pictures, previews

    # ---- pictures and tokens

    @torch.inference_mode()
    def encode(self, pictures: Sequence[Picture]) -> Tensor:
        """VQGAN tokens [B, h, w] of pictures of one size, sides multiples of the VQGAN downscale."""
        f = self.config.downscale
        if len({p.size for p in pictures}) != 1:
            raise ValueError("all pictures of one call must have one size")
        width, height = pictures[0].size
        if width % f or height % f:
            raise ValueError(f"picture sides must be multiples of {f}, got {width}x{height}")
        x = self.pixels(pictures).to(self._dtype(self.vqgan))
        native = (height, width) == (self.config.image_size, self.config.image_size)
        # another size runs eagerly: a graph captured for it mid-traffic would stall the device
        # (a capture synchronises it and empties the allocators' caches); outpaintings bring every size
        return self._vqgan(self._encode if native else self.vqgan.encode, x)

    def pixels(self, pictures: Sequence[Picture]) -> Tensor:
        """Pictures of one size as one float batch [B, 3, H, W] in [0, 1] on the device."""
        host = torch.from_numpy(np.stack([p.array() for p in pictures]))  # (B, H, W, 3)
        batch = to_device(host, self.device)
        return batch.permute(0, 3, 1, 2).float() / 255

    def seed_tensor(self, seeds: Iterable[int]) -> Tensor:
        """Seeds as int64 on the device; uint64 values keep their bits."""
        return to_device(torch.tensor([signed(s) for s in seeds], dtype=torch.int64), self.device)

    def _vqgan(self, run: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        if not self.exact_vqgan:
            return run(x)
        return torch.cat([run(x[i : i + 1]) for i in range(x.shape[0])])

    @staticmethod
    def _dtype(module: torch.nn.Module) -> torch.dtype:
        return next(module.parameters()).dtype

    # ---- operations to sampling rows

    def rows(self, draws: Sequence[Draw]) -> Rows:
        """The sampler's per-row inputs for `draws` (one canvas, one step count): `model.rows.build_rows`."""
        return build_rows(self, draws)

    def _text(self, draws: Sequence[Draw]) -> dict[str, Tensor]:
        """The CLIP text embedding of every prompt the draws name, from one batched encoding."""
        prompts: list[str] = []
        for d in draws:
            op = d.op
            if isinstance(op, Generate):
                prompts += [op.prompt] if op.negative_prompt is None else [op.prompt, op.negative_prompt]
            elif isinstance(op, Inpaint | Outpaint | StructuralEdit):
                prompts.append(op.prompt)
            elif isinstance(op, Interpolation):
                prompts += [e for e in (op.start, op.end) if isinstance(e, str)]
            elif isinstance(op, Composition):
                prompts += [r.prompt for r in op.regions]
        unique = list(dict.fromkeys(prompts))
        return dict(zip(unique, self.clip.encode_text(unique), strict=True)) if unique else {}

    def _seen(self, draws: Sequence[Draw]) -> dict[Picture, Tensor]:
        """The CLIP image embedding of every picture the draws condition on (variations, interpolations)."""
        pictures: list[Picture] = []
        for d in draws:
            if isinstance(d.op, Variation):
                pictures.append(d.op.image)
            elif isinstance(d.op, Interpolation):
                pictures += [e for e in (d.op.start, d.op.end) if isinstance(e, Picture)]
        unique = list(dict.fromkeys(pictures))
        if not unique:
            return {}
        embeddings = self.clip.encode_image([self.pixels([p])[0] for p in unique])
        return dict(zip(unique, embeddings, strict=True))

    def _encoded(self, draws: Sequence[Draw]) -> dict[Picture, Tensor]:
        """The VQGAN tokens of every picture the draws start from, encoded once each, batched by size."""
        pictures = list(
            dict.fromkeys(d.op.image for d in draws if isinstance(d.op, Inpaint | Outpaint | StructuralEdit))
        )
        out: dict[Picture, Tensor] = {}
        for size in dict.fromkeys(p.size for p in pictures):
            same = [p for p in pictures if p.size == size]
            out.update(zip(same, self.encode(same), strict=True))
        return out

    def batch_sizes(self, largest: int) -> list[int]:
        """The batch sizes worth warming up to `largest`: the fast path's buckets, else powers of two."""
        sizes = self.buckets or [2**i for i in range(largest.bit_length())]
        return sorted({*(b for b in sizes if b < largest), largest})

    @torch.inference_mode()
    def warmup(self, largest: int, *, width: int, height: int) -> dict[int, float]:
        """Run one generation per batch size up to `largest`, and encode as many pictures and distinct
        prompts (capturing the graphs on the fast path), so kernels, graphs and allocator caches are ready
        before traffic; the wall seconds of each size (the first holds the compilations). A graph left to
        its first use would be captured mid-traffic, and a capture synchronises the device and empties the
        allocators' caches: a stall of everything in flight. The text tower is also warmed for up to twice
        `largest` distinct prompts (negative prompts), in the largest size's seconds. Then the graphs are
        sealed (`BucketGraphs.seal`): a setting warm-up did not meet runs uncaptured until it recurs."""
        seconds = {}

        def prompts(n: int) -> None:  # n distinct prompts: the text tower's bucket of n
            self.clip.encode_text([f"{n} {i}" for i in range(n)])

        for n in self.batch_sizes(largest):
            began = time.perf_counter()
            self.images([Draw(Generate("", width, height), i, self.config.sampler) for i in range(n)])
            if self.buckets is not None:  # the towers that prompts, edits and variations use
                blank = torch.zeros((n, 3, height, width), device=self.device)
                self._vqgan(self._encode, blank.to(self._dtype(self.vqgan)))
                self.clip.encode_image(blank)
                prompts(n)
            seconds[n] = time.perf_counter() - began
        if self.buckets is not None:
            began = time.perf_counter()
            upper = bucket(2 * largest, self.buckets) or self.buckets[-1]  # the bucket 2 x largest lands in
            for n in (b for b in self.buckets if largest < b <= upper):
                prompts(n)
            seconds[largest] += time.perf_counter() - began
            self.clip.clear_cache()
        for graphs in self._graphs:
            graphs.seal()
        return seconds
