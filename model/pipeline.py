"""Pipeline: prompts and images in, images out; glue between CLIP, the sampler, the denoiser and the VQGAN.

Every operation has a token-level form (`*_tokens`, returning [B, h, w] int64 codes) and an image form
that decodes it. Lists are one entry per output image and run as one batch: one forward per step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from model.clip import ClipEncoder
from model.config import ModelConfig, SamplerConfig
from model.denoiser import Denoiser
from model.sampler import noise_tokens, sample
from model.vqgan import VQGAN
from model.weights import load_module, read_extra, read_folder

ImageLike = Image.Image | np.ndarray  # PIL, or uint8 [H, W, 3]
Condition = str | ImageLike  # an interpolation endpoint: a prompt or a picture


@dataclass(frozen=True)
class Region:
    """A prompt over part of the canvas, for multi-conditioning."""

    prompt: str
    box: tuple[float, float, float, float] | None = None  # (left, top, right, bottom), fractions; None = all
    weight: float = 1.0  # overlapping regions blend by weight


class Pipeline:
    """Paella v1 text-to-image and its image operations (Rampas et al. 2022), batched and seeded."""

    def __init__(
        self,
        config: ModelConfig,
        denoiser: Denoiser,
        vqgan: VQGAN,
        clip: ClipEncoder,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ):
        self.config = config
        self.device = torch.device(device)
        for module in (denoiser, vqgan, clip):  # the one place modules are placed and frozen
            module.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        self.denoiser, self.vqgan, self.clip = denoiser, vqgan, clip
        self.downscale = config.vqgan.downscale
        self.size_multiple = self.downscale * config.denoiser.grid_multiple
        self.min_size = 2 * self.size_multiple  # the denoiser's deepest level needs two rows to pad

    @classmethod
    def from_folder(
        cls, path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> Pipeline:
        """Load a weight folder (see docs/contracts.md) strictly; nothing is downloaded."""
        config, tensors = read_folder(path)
        vocab = json.loads(read_extra(path, "vocab.json")) if config.clip.tokenizer == "words" else None
        with torch.device(device):  # initialise the parameters where they will live
            denoiser = load_module(Denoiser(config.denoiser), tensors["denoiser"], dtype=dtype)
            vqgan = load_module(VQGAN(config.vqgan), tensors["vqgan"], dtype=dtype)
            clip = ClipEncoder(config.clip, vocab, cache_size=1024)
            load_module(clip.model, tensors["clip"], dtype=dtype)
        return cls(config, denoiser, vqgan, clip, device=device, dtype=dtype)

    @classmethod
    def from_modules(
        cls,
        config: ModelConfig,
        denoiser: Denoiser,
        vqgan: VQGAN,
        clip: ClipEncoder,
        *,
        device: str | torch.device = "cpu",
    ) -> Pipeline:
        """Wrap modules built elsewhere (e.g. by the trainer); they keep their dtype."""
        return cls(config, denoiser, vqgan, clip, device=device)

    # ---- inputs and outputs

    def seed_tensor(self, seeds: Sequence[int]) -> torch.Tensor:
        """Seeds as int64 on the device; uint64 values keep their bits."""
        return torch.tensor(
            [(int(s) + 2**63) % 2**64 - 2**63 for s in seeds], dtype=torch.int64, device=self.device
        )

    def grid(self, width: int, height: int) -> tuple[int, int]:
        """The token grid (h, w) of a canvas: sides multiples of `size_multiple`, at least `min_size`."""
        m = self.size_multiple
        if min(width, height) < self.min_size or width % m or height % m:
            raise ValueError(
                f"width and height must be multiples of {m}, at least {self.min_size}, got {width}x{height}"
            )
        return height // self.downscale, width // self.downscale

    def pixels(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Images as one float batch [B, 3, H, W] in [0, 1] on the device; all must be one size."""
        arrays = [np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im) for im in images]
        for a in arrays:
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
                raise ValueError(f"images must be PIL or uint8 [H, W, 3] arrays, got {a.dtype} {a.shape}")
        if len({a.shape for a in arrays}) != 1:
            raise ValueError("all images of one call must have one size")
        batch = torch.from_numpy(np.stack(arrays)).to(self.device)  # (B, H, W, 3)
        return batch.permute(0, 3, 1, 2).float() / 255

    @torch.inference_mode()
    def encode(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """VQGAN tokens [B, h, w] of images whose sides are multiples of the VQGAN downscale."""
        x = self.pixels(images)
        f = self.downscale
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"image sides must be multiples of {f}, got {x.shape[-1]}x{x.shape[-2]}")
        return self.vqgan.encode(x.to(self._dtype(self.vqgan)))

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor) -> list[Image.Image]:
        """PIL RGB images of token grids [B, h, w], decoded one by one so no pixel depends on the batch.

        Batched convolutions pick kernels by batch size (one level off in some pixels on the CPU); at the
        decoder's resolution one image already fills the device, so exactness costs little.
        """
        x = torch.cat([self.vqgan.decode(tokens[i : i + 1]) for i in range(tokens.shape[0])])  # (B, 3, H, W)
        arrays = (x.float() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(a, "RGB") for a in arrays]

    @staticmethod
    def _dtype(module: torch.nn.Module) -> torch.dtype:
        return next(module.parameters()).dtype

    def _sample(
        self,
        cond: torch.Tensor,
        seeds: Sequence[int],
        grid: tuple[int, int],
        sampler: SamplerConfig | None,
        *,
        uncond: torch.Tensor | None = None,
        init_tokens: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if len(seeds) != cond.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for {cond.shape[0]} images")
        self.grid(grid[1] * self.downscale, grid[0] * self.downscale)
        return sample(
            self.denoiser,
            cond,
            seeds=self.seed_tensor(seeds),
            grid=grid,
            config=sampler or self.config.sampler,
            num_labels=self.config.denoiser.num_labels,
            uncond=uncond,
            init_tokens=init_tokens,
            mask=mask,
        )

    # ---- token-level operations

    @torch.inference_mode()
    def generate_tokens(
        self,
        prompts: Sequence[str],
        *,
        seeds: Sequence[int],
        width: int,
        height: int,
        sampler: SamplerConfig | None = None,
        negative_prompts: Sequence[str | None] | None = None,
    ) -> torch.Tensor:
        """Text to tokens; a negative prompt stands in for guidance's zero uncond embedding (None: zeros)."""
        grid = self.grid(width, height)
        if negative_prompts is None:
            return self._sample(self.clip.encode_text(prompts), seeds, grid, sampler)
        if len(negative_prompts) != len(prompts):
            raise ValueError("one negative prompt (or None) per prompt")
        given = [n for n in negative_prompts if n is not None]
        emb = self.clip.encode_text([*prompts, *given])
        cond, negatives = emb[: len(prompts)], iter(emb[len(prompts) :])
        uncond = torch.stack(
            [
                torch.zeros_like(c) if n is None else next(negatives)
                for c, n in zip(cond, negative_prompts, strict=True)
            ]
        )
        return self._sample(cond, seeds, grid, sampler, uncond=uncond)

    @torch.inference_mode()
    def inpaint_tokens(
        self,
        images: Sequence[ImageLike],
        masks: Sequence[np.ndarray],
        prompts: Sequence[str],
        *,
        seeds: Sequence[int],
        sampler: SamplerConfig | None = None,
    ) -> torch.Tensor:
        """Repaint the tokens touching a mask's True pixels; every other token stays exactly as encoded."""
        tokens = self.encode(images)
        B, h, w = tokens.shape
        f = self.downscale
        pixel_mask = torch.from_numpy(np.stack([np.asarray(m, dtype=bool) for m in masks])).to(self.device)
        if pixel_mask.shape != (B, h * f, w * f):
            raise ValueError(f"masks must be bool [H, W] at image size {(h * f, w * f)}")
        mask = pixel_mask.view(B, h, f, w, f).any(dim=4).any(dim=2)  # (B, h, w)
        cond = self.clip.encode_text(prompts)
        return self._sample(cond, seeds, (h, w), sampler, init_tokens=tokens, mask=mask)

    @torch.inference_mode()
    def outpaint_tokens(
        self,
        images: Sequence[ImageLike],
        prompts: Sequence[str],
        *,
        left: int,
        right: int,
        up: int,
        down: int,
        seeds: Sequence[int],
        sampler: SamplerConfig | None = None,
    ) -> torch.Tensor:
        """Extend the canvas by the given pixels per side; the image's own tokens stay in place, exactly."""
        f = self.downscale
        if any(side < 0 or side % f for side in (left, right, up, down)):
            raise ValueError(f"outpainting sides must be non-negative multiples of {f}")
        tokens = self.encode(images)
        B, h, w = tokens.shape
        H, W = self.grid((w * f) + left + right, (h * f) + up + down)
        top, lft = up // f, left // f
        canvas = torch.zeros(B, H, W, dtype=torch.int64, device=self.device)
        canvas[:, top : top + h, lft : lft + w] = tokens
        mask = torch.ones(B, H, W, dtype=torch.bool, device=self.device)
        mask[:, top : top + h, lft : lft + w] = False
        cond = self.clip.encode_text(prompts)
        return self._sample(cond, seeds, (H, W), sampler, init_tokens=canvas, mask=mask)

    @torch.inference_mode()
    def variations_tokens(
        self,
        images: Sequence[ImageLike],
        *,
        seeds: Sequence[int],
        width: int,
        height: int,
        sampler: SamplerConfig | None = None,
    ) -> torch.Tensor:
        """New images from the CLIP image embeddings of pictures (any sizes) in place of text embeddings."""
        cond = self.clip.encode_image([self.pixels([im])[0] for im in images])
        return self._sample(cond, seeds, self.grid(width, height), sampler)

    @torch.inference_mode()
    def interpolation_conditions(
        self,
        start: Condition,
        end: Condition,
        *,
        frames: int,
        mode: Literal["lerp", "slerp"] = "slerp",
        frame_indices: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """CLIP embeddings [F, c] from `start` (frame 0) to `end` (frame frames-1), lerp or slerp."""
        if frames < 1:
            raise ValueError("frames must be at least 1")
        indices = list(range(frames)) if frame_indices is None else list(frame_indices)
        if any(not 0 <= i < frames for i in indices):
            raise ValueError(f"frame indices must lie in [0, {frames})")
        a, b = self._condition(start), self._condition(end)
        t = torch.tensor([i / max(frames - 1, 1) for i in indices], device=a.device, dtype=torch.float32)
        return interpolate(a.float(), b.float(), t[:, None], mode).to(a.dtype)

    def _condition(self, c: Condition) -> torch.Tensor:
        if isinstance(c, str):
            return self.clip.encode_text([c])[0]
        return self.clip.encode_image(self.pixels([c]))[0]

    @torch.inference_mode()
    def interpolate_tokens(
        self,
        start: Condition,
        end: Condition,
        *,
        frames: int,
        seed: int,
        mode: Literal["lerp", "slerp"] = "slerp",
        width: int,
        height: int,
        sampler: SamplerConfig | None = None,
        frame_indices: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Frames along an interpolation between two prompts or pictures, all sampled with one seed."""
        grid = self.grid(width, height)
        cond = self.interpolation_conditions(
            start, end, frames=frames, mode=mode, frame_indices=frame_indices
        )
        return self._sample(cond, [seed] * cond.shape[0], grid, sampler)

    @torch.inference_mode()
    def region_maps(self, layouts: Sequence[Sequence[Region]], grid: tuple[int, int]) -> torch.Tensor:
        """Spatial conditions [B, c, h, w]: each token position gets the weighted mean embedding of the
        regions whose box holds its centre; positions no region covers get zeros (the uncond)."""
        h, w = grid
        prompts = list(dict.fromkeys(r.prompt for layout in layouts for r in layout))
        emb = self.clip.encode_text(prompts).float() if prompts else None  # (P, c)
        index = {p: i for i, p in enumerate(prompts)}
        ys = (torch.arange(h, device=self.device) + 0.5) / h
        xs = (torch.arange(w, device=self.device) + 0.5) / w
        maps = torch.zeros(len(layouts), self.config.clip.embed_dim, h, w, device=self.device)
        for b, layout in enumerate(layouts):
            if not layout:
                continue
            assert emb is not None
            cover = torch.zeros(len(layout), h, w, device=self.device)
            for k, region in enumerate(layout):
                if not (region.weight > 0 and math.isfinite(region.weight)):
                    raise ValueError(f"region weights must be positive, got {region.weight}")
                left, top, right, bottom = region.box or (0.0, 0.0, 1.0, 1.0)
                inside = ((ys >= top) & (ys < bottom))[:, None] & ((xs >= left) & (xs < right))[None, :]
                cover[k] = inside * region.weight
            rows = emb[[index[r.prompt] for r in layout]]  # (R, c)
            total = torch.einsum("rhw,rc->chw", cover, rows)
            maps[b] = total / cover.sum(0).clamp_min(torch.finfo(total.dtype).tiny)
        return maps.to(self._dtype(self.denoiser))

    @torch.inference_mode()
    def multi_condition_tokens(
        self,
        layouts: Sequence[Sequence[Region]],
        *,
        seeds: Sequence[int],
        width: int,
        height: int,
        sampler: SamplerConfig | None = None,
    ) -> torch.Tensor:
        """Prompts over regions of one canvas, as a spatial condition map; guidance's uncond is zeros."""
        grid = self.grid(width, height)
        return self._sample(self.region_maps(layouts, grid), seeds, grid, sampler)

    @torch.inference_mode()
    def structural_edit_tokens(
        self,
        images: Sequence[ImageLike],
        prompts: Sequence[str],
        *,
        strength: float,
        seeds: Sequence[int],
        sampler: SamplerConfig | None = None,
    ) -> torch.Tensor:
        """Noise the encoded image to r_k and run steps k..T with renoise mode `prev`, k = round((1-s)*T)."""
        if not 0 <= strength <= 1:
            raise ValueError(f"strength must lie in [0, 1], got {strength}")
        config = sampler or self.config.sampler
        k = round((1 - strength) * config.steps)
        tokens = self.encode(images)
        r = torch.tensor(k / config.steps, device=self.device)
        num_labels = self.config.denoiser.num_labels
        noised = noise_tokens(tokens, r, seeds=self.seed_tensor(seeds), step=k, num_labels=num_labels)
        edit = config.replace(start_step=k, renoise_mode="prev")
        cond = self.clip.encode_text(prompts)
        return self._sample(cond, seeds, (tokens.shape[1], tokens.shape[2]), edit, init_tokens=noised)

    # ---- image-level operations (docs/contracts.md)

    def generate(
        self,
        prompts: Sequence[str],
        *,
        seeds: Sequence[int],
        width: int,
        height: int,
        sampler: SamplerConfig | None = None,
        negative_prompts: Sequence[str | None] | None = None,
    ) -> list[Image.Image]:
        """Text to images."""
        return self.decode(
            self.generate_tokens(
                prompts,
                seeds=seeds,
                width=width,
                height=height,
                sampler=sampler,
                negative_prompts=negative_prompts,
            )
        )

    def inpaint(
        self,
        images: Sequence[ImageLike],
        masks: Sequence[np.ndarray],
        prompts: Sequence[str],
        *,
        seeds: Sequence[int],
        sampler: SamplerConfig | None = None,
    ) -> list[Image.Image]:
        """Repaint the masked parts of images (masks: bool [H, W], True = repaint)."""
        return self.decode(self.inpaint_tokens(images, masks, prompts, seeds=seeds, sampler=sampler))

    def outpaint(
        self,
        images: Sequence[ImageLike],
        prompts: Sequence[str],
        *,
        left: int,
        right: int,
        up: int,
        down: int,
        seeds: Sequence[int],
        sampler: SamplerConfig | None = None,
    ) -> list[Image.Image]:
        """Extend images by the given pixels on each side."""
        tokens = self.outpaint_tokens(
            images, prompts, left=left, right=right, up=up, down=down, seeds=seeds, sampler=sampler
        )
        return self.decode(tokens)

    def variations(
        self,
        images: Sequence[ImageLike],
        *,
        seeds: Sequence[int],
        width: int,
        height: int,
        sampler: SamplerConfig | None = None,
    ) -> list[Image.Image]:
        """Variations of pictures via their CLIP image embeddings."""
        return self.decode(
            self.variations_tokens(images, seeds=seeds, width=width, height=height, sampler=sampler)
        )

    def interpolate(
        self,
        start: Condition,
        end: Condition,
        *,
        frames: int,
        seed: int,
        mode: Literal["lerp", "slerp"] = "slerp",
        width: int,
        height: int,
        sampler: SamplerConfig | None = None,
        frame_indices: Sequence[int] | None = None,
    ) -> list[Image.Image]:
        """Frames interpolating between two prompts or pictures, one seed for all."""
        tokens = self.interpolate_tokens(
            start,
            end,
            frames=frames,
            seed=seed,
            mode=mode,
            width=width,
            height=height,
            sampler=sampler,
            frame_indices=frame_indices,
        )
        return self.decode(tokens)

    def multi_condition(
        self,
        layouts: Sequence[Sequence[Region]],
        *,
        seeds: Sequence[int],
        width: int,
        height: int,
        sampler: SamplerConfig | None = None,
    ) -> list[Image.Image]:
        """Images from regional prompts, one layout per image."""
        tokens = self.multi_condition_tokens(
            layouts, seeds=seeds, width=width, height=height, sampler=sampler
        )
        return self.decode(tokens)

    def structural_edit(
        self,
        images: Sequence[ImageLike],
        prompts: Sequence[str],
        *,
        strength: float,
        seeds: Sequence[int],
        sampler: SamplerConfig | None = None,
    ) -> list[Image.Image]:
        """Re-render images under new prompts, keeping their structure (strength 0: the input tokens)."""
        tokens = self.structural_edit_tokens(images, prompts, strength=strength, seeds=seeds, sampler=sampler)
        return self.decode(tokens)

    def warmup(self, batch_sizes: Sequence[int], *, width: int, height: int) -> None:
        """Run one generation per batch size so kernels and allocator caches are ready before traffic."""
        for n in batch_sizes:
            self.generate([""] * n, seeds=list(range(n)), width=width, height=height)


def interpolate(
    a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, mode: Literal["lerp", "slerp"]
) -> torch.Tensor:
    """Linear or spherical (Shoemake 1985) interpolation from a (t=0) to b (t=1), exact at both ends."""
    if mode == "lerp":
        return torch.lerp(a, b, t)
    if mode != "slerp":
        raise ValueError(f"unknown interpolation mode {mode!r}")
    cos = torch.dot(a / a.norm(), b / b.norm()).clamp(-1, 1)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    if sin.abs() < 1e-6:  # (anti)parallel: the arc is undefined, take the chord
        return torch.lerp(a, b, t)
    return (torch.sin((1 - t) * omega) / sin) * a + (torch.sin(t * omega) / sin) * b  # exact ends: 1 and 0
