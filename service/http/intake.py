"""Turns a validated request into a Job for one model: uploads decoded and checked, the operation built,
seeds drawn, the sampler settings resolved against the model's defaults (OpenAI's `quality` as a step
count), previews and encoding chosen.

Everything that can be wrong with a request is found here, so bad input never reaches the queue.
"""

from __future__ import annotations

import secrets

import numpy as np
from PIL import Image

from model.config import Knobs, ModelConfig
from model.ops import (
    Composition,
    Generate,
    Inpaint,
    Interpolation,
    Mask,
    Operation,
    Outpaint,
    Picture,
    StructuralEdit,
    Variation,
)
from service.errors import ServiceError
from service.http import schemas
from service.http.uploads import check_canvas, open_image, parse_size, picture, repaint_mask
from service.queue.jobs import Encoding, Job
from service.settings import Settings

# OpenAI's `quality` as a multiple of the model's step count.
QUALITY_STEPS = {
    "low": 0.5,
    "medium": 1.0,
    "standard": 1.0,
    "auto": 1.0,
    "high": 1.5,
    "hd": 1.5,
    "xhigh": 2.0,
    "max": 3.0,
}
MAX_STEPS = 64


class Intake:
    """Builds Jobs from requests under one model's size rules and the service's limits."""

    def __init__(self, model: ModelConfig, settings: Settings) -> None:
        self.model = model
        self.settings = settings

    def generation(self, r: schemas.GenerationRequest) -> Job:
        op = Generate(r.prompt, *self._canvas(r.size), negative_prompt=r.negative_prompt)
        return self._job(op, r, r.n)

    def edit(self, r: schemas.EditRequest) -> Job:
        """Inpainting at the image's size, or at `size` with the image and the mask resized to it."""
        source = self._open(r.image, "image")
        if r.size is None or r.size == "auto":
            size = source.size
            self._check(*size, field="image")
        else:
            size = parse_size(r.size, self.model, max_side=self.settings.max_side)
        mask_image = source if r.mask is None else self._open(r.mask, "mask")
        if mask_image.size != source.size:
            raise ServiceError(
                400,
                "mask_size_mismatch",
                f"mask: {mask_image.width}x{mask_image.height}, image: {source.width}x{source.height}",
                "mask",
            )
        mask = repaint_mask(mask_image, "image" if r.mask is None else "mask")
        if size != source.size:
            source = source.convert("RGB").resize(size, Image.Resampling.LANCZOS)
            mask = Mask.from_array(np.asarray(Image.fromarray(mask.array()).resize(size)))
        return self._job(Inpaint(picture(source), mask, r.prompt), r, r.n)

    def outpaint(self, r: schemas.OutpaintRequest) -> Job:
        image = self._upload(r.image, "image")  # only the extended canvas follows the size rules
        f = self.model.downscale
        if image.width % f or image.height % f:
            raise ServiceError(
                400,
                "invalid_size",
                f"image: {image.width}x{image.height}; sides must be multiples of {f}",
                "image",
            )
        for side in ("left", "right", "up", "down"):
            if getattr(r, side) % f:
                raise ServiceError(400, "invalid_padding", f"{side}: must be a multiple of {f}", side)
        op = Outpaint(image, r.prompt, r.left, r.right, r.up, r.down)
        self._check(*op.size, field="image")
        return self._job(op, r, r.n)

    def variations(self, r: schemas.VariationRequest) -> Job:
        return self._job(Variation(self._upload(r.image, "image"), *self._canvas(r.size)), r, r.n)

    def structural_edit(self, r: schemas.StructuralEditRequest) -> Job:
        return self._job(
            StructuralEdit(self._upload(r.image, "image", sized=True), r.prompt, r.strength), r, r.n
        )

    def composition(self, r: schemas.CompositionRequest) -> Job:
        return self._job(Composition(tuple(r.regions), *self._canvas(r.size)), r, r.n)

    def interpolation(self, r: schemas.InterpolationRequest) -> Job:
        if r.frames > self.settings.max_frames:
            raise ServiceError(400, "invalid_value", f"frames: at most {self.settings.max_frames}", "frames")
        ends: list[str | Picture] = []
        for end in ("start", "end"):
            prompt, image = getattr(r, f"{end}_prompt"), getattr(r, f"{end}_image")
            ends.append(prompt if image is None else self._upload(image, f"{end}_image"))
        op = Interpolation(ends[0], ends[1], r.frames, *self._canvas(r.size), mode=r.mode)
        seed = r.seed if r.seed is not None else _random_seed()
        return self._job(op, r, r.frames, seeds=[seed] * r.frames)  # every frame shares the seed

    def _job(self, op: Operation, r: schemas.ImageOptions, n: int, seeds: list[int] | None = None) -> Job:
        if seeds is None:
            if n > self.settings.max_n:
                raise ServiceError(400, "invalid_value", f"n: at most {self.settings.max_n}", "n")
            seeds = (
                [r.seed + i for i in range(n)] if r.seed is not None else [_random_seed() for _ in range(n)]
            )
        sampler = self.model.sampler.with_knobs(self.knobs(r))
        previews = r.partial_images or 0 if isinstance(r, schemas.Streamable) and r.stream else 0
        return Job.new(
            op,
            seeds,
            sampler,
            self.settings.request_timeout_s,
            model=self.model.name,
            previews=previews,
            encoding=Encoding(
                r.output_format or "png", 100 if r.output_compression is None else r.output_compression
            ),
        )

    def knobs(self, r: schemas.ImageOptions) -> Knobs:
        """The request's knobs; `quality` sets the steps when `steps` does not; an explicit null
        `typical_mass` turns filtering off, as 0 does."""
        mass = r.typical_mass
        if "typical_mass" in r.model_fields_set and mass is None:
            mass = 0.0
        steps = r.steps
        if steps is None and r.quality is not None:
            wanted = round(self.model.sampler.steps * QUALITY_STEPS[r.quality])
            steps = min(MAX_STEPS, max(1, wanted))
        return Knobs(
            steps=steps, guidance_scale=r.guidance_scale, temperature=r.temperature, typical_mass=mass
        )

    def _canvas(self, size: str | None) -> tuple[int, int]:
        if size is None or size == "auto":
            return self.model.image_size, self.model.image_size
        return parse_size(size, self.model, max_side=self.settings.max_side)

    def _check(self, width: int, height: int, *, field: str) -> None:
        check_canvas(self.model, width, height, max_side=self.settings.max_side, field=field)

    def _open(self, data: bytes, field: str) -> Image.Image:
        s = self.settings
        return open_image(data, field=field, max_bytes=s.max_body_bytes, max_pixels=s.max_image_pixels)

    def _picture(self, image: Image.Image, field: str, *, sized: bool = False) -> Picture:
        """A decoded upload's pixels; `sized` ones become the canvas, so they follow the size rules too."""
        if sized:
            self._check(image.width, image.height, field=field)
        return picture(image)

    def _upload(self, data: bytes, field: str, *, sized: bool = False) -> Picture:
        return self._picture(self._open(data, field), field, sized=sized)


def _random_seed() -> int:
    return secrets.randbelow(schemas.MAX_SEED - 16)
