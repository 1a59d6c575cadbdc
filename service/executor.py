"""Turns a batch of slices sharing one compatibility key into one Pipeline call and PNG bytes.

The tokens of a batch come from one call (the sampler keeps each sample's randomness its own);
`Pipeline.decode` decodes them one at a time, so the bytes do not depend on the batch an image landed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from PIL import Image

from model.config import SamplerConfig
from model.pipeline import Pipeline, Region
from service.images import mask_from_png_b64, rgb_from_b64, to_png
from service.jobs import Slice

T = TypeVar("T")


def sampler_from(default: SamplerConfig, overrides: dict[str, Any]) -> SamplerConfig:
    """The model's sampler with a payload's knobs applied (JSON lists back to tuples)."""
    return default.replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})


class Executor:
    """Runs batches on one resident Pipeline; every image's seed alone decides it."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def __call__(self, slices: Sequence[Slice]) -> list[list[bytes]]:
        """PNG bytes per slice, in the order of the slice's seeds."""
        first = slices[0].job.payload
        op = first["op"]
        sampler = sampler_from(self.pipeline.config.sampler, first["sampler"])
        if op == "interpolate":
            return [self._pngs(self._interpolate(s, sampler)) for s in slices]
        counts = [s.stop - s.start for s in slices]
        seeds = [seed for s in slices for seed in s.job.seeds[s.start : s.stop]]

        def per_image(read: Callable[[dict[str, Any]], T]) -> list[T]:
            """`read` once per slice's payload, repeated for each of the slice's images."""
            return [value for s, c in zip(slices, counts, strict=True) for value in [read(s.job.payload)] * c]

        p = self.pipeline
        if op == "generate":
            negatives = per_image(lambda q: q.get("negative_prompt"))
            tokens = p.generate_tokens(
                per_image(lambda q: q["prompt"]),
                seeds=seeds,
                width=first["width"],
                height=first["height"],
                sampler=sampler,
                negative_prompts=negatives if any(n is not None for n in negatives) else None,
            )
        elif op == "inpaint":
            tokens = p.inpaint_tokens(
                per_image(lambda q: rgb_from_b64(q["image"])),
                per_image(lambda q: mask_from_png_b64(q["mask"])),
                per_image(lambda q: q["prompt"]),
                seeds=seeds,
                sampler=sampler,
            )
        elif op == "outpaint":
            tokens = p.outpaint_tokens(
                per_image(lambda q: rgb_from_b64(q["image"])),
                per_image(lambda q: q["prompt"]),
                left=first["left"],
                right=first["right"],
                up=first["up"],
                down=first["down"],
                seeds=seeds,
                sampler=sampler,
            )
        elif op == "variations":
            canvas = (first["width"], first["height"])  # one size per call; CLIP resizes them anyway
            tokens = p.variations_tokens(
                per_image(lambda q: rgb_from_b64(q["image"]).resize(canvas, Image.Resampling.BICUBIC)),
                seeds=seeds,
                width=first["width"],
                height=first["height"],
                sampler=sampler,
            )
        elif op == "multi_condition":
            tokens = p.multi_condition_tokens(
                per_image(lambda q: [Region(r["prompt"], _box(r["box"]), r["weight"]) for r in q["regions"]]),
                seeds=seeds,
                width=first["width"],
                height=first["height"],
                sampler=sampler,
            )
        elif op == "structural_edit":
            tokens = p.structural_edit_tokens(
                per_image(lambda q: rgb_from_b64(q["image"])),
                per_image(lambda q: q["prompt"]),
                strength=first["strength"],
                seeds=seeds,
                sampler=sampler,
            )
        else:
            raise ValueError(f"unknown operation {op!r}")
        pngs = self._pngs(tokens)
        out, at = [], 0
        for c in counts:
            out.append(pngs[at : at + c])
            at += c
        return out

    def _pngs(self, tokens: torch.Tensor) -> list[bytes]:
        """PNG bytes of each token grid (`Pipeline.decode` decodes image by image: batch-exact)."""
        return [to_png(image) for image in self.pipeline.decode(tokens)]

    def _interpolate(self, s: Slice, sampler: SamplerConfig) -> torch.Tensor:
        """One call per slice: the frames `start:stop` of its job's interpolation."""
        q = s.job.payload
        tokens = self.pipeline.interpolate_tokens(
            _endpoint(q["start"]),
            _endpoint(q["end"]),
            frames=q["frames"],
            seed=s.job.seeds[0],
            mode=q["mode"],
            width=q["width"],
            height=q["height"],
            sampler=sampler,
            frame_indices=list(range(s.start, s.stop)),
        )
        return tokens


def _endpoint(end: dict[str, str]) -> Any:
    return end["prompt"] if "prompt" in end else rgb_from_b64(end["image"])


def _box(box: list[float] | None) -> tuple[float, float, float, float] | None:
    return None if box is None else (box[0], box[1], box[2], box[3])
