"""Turns a validated request into a Job: images checked, seeds drawn, knobs resolved, key built.

Everything that can be wrong with a request is found here, so bad input never reaches the queue.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from model.config import ModelConfig, SamplerConfig
from service import schemas
from service.errors import ApiError
from service.images import (
    b64encode,
    check_side_rules,
    mask_to_png,
    open_image,
    parse_size,
    repaint_mask,
)
from service.jobs import Job
from service.settings import Settings


@dataclass(frozen=True)
class ModelInfo:
    """What the HTTP side must know of the model, without loading it."""

    name: str
    image_size: int
    size_multiple: int
    downscale: int
    sampler: SamplerConfig

    @classmethod
    def from_config(cls, config: ModelConfig) -> ModelInfo:
        downscale = config.vqgan.downscale
        return cls(
            name=config.name,
            image_size=config.image_size,
            size_multiple=downscale * config.denoiser.grid_multiple,
            downscale=downscale,
            sampler=config.sampler,
        )

    @classmethod
    def from_folder(cls, folder: Path) -> ModelInfo:
        return cls.from_config(ModelConfig.from_dict(json.loads((folder / "config.json").read_text())))


class Intake:
    """Builds Jobs from requests under one model's size rules and the service's limits."""

    def __init__(self, model: ModelInfo, settings: Settings) -> None:
        self.model = model
        self.settings = settings

    def generation(self, r: schemas.GenerationRequest) -> Job:
        width, height = self._canvas(r.size)
        payload = {"prompt": r.prompt, "negative_prompt": r.negative_prompt}
        return self._job("generations", "generate", r, r.n, payload, width=width, height=height)

    def edit(self, r: schemas.EditRequest) -> Job:
        image = self._image(r.image, "image", sized=True)
        if r.mask is None:
            mask = repaint_mask(image, "image")
        else:
            mask_image = self._image(r.mask, "mask")
            if mask_image.size != image.size:
                raise ApiError(
                    400,
                    "mask_size_mismatch",
                    f"mask: {mask_image.width}x{mask_image.height}, image: {image.width}x{image.height}",
                    "mask",
                )
            mask = repaint_mask(mask_image, "mask")
        payload = {"prompt": r.prompt, "image": b64encode(r.image), "mask": b64encode(mask_to_png(mask))}
        return self._job("edits", "inpaint", r, r.n, payload, width=image.width, height=image.height)

    def outpaint(self, r: schemas.OutpaintRequest) -> Job:
        image = self._image(r.image, "image", sized=True)
        pads: dict[str, Any] = {"left": r.left, "right": r.right, "up": r.up, "down": r.down}
        for side, pixels in pads.items():
            if pixels % self.model.downscale:
                raise ApiError(
                    400, "invalid_padding", f"{side}: must be a multiple of {self.model.downscale}", side
                )
        width, height = image.width + r.left + r.right, image.height + r.up + r.down
        check_side_rules(
            width, height, multiple=self.model.size_multiple, max_side=self.settings.max_side, field="image"
        )
        payload = {"prompt": r.prompt, "image": b64encode(r.image)}
        return self._job("outpaints", "outpaint", r, r.n, payload, width=width, height=height, **pads)

    def variations(self, r: schemas.VariationRequest) -> Job:
        self._image(r.image, "image")
        width, height = self._canvas(r.size)
        return self._job(
            "variations", "variations", r, r.n, {"image": b64encode(r.image)}, width=width, height=height
        )

    def structural_edit(self, r: schemas.StructuralEditRequest) -> Job:
        image = self._image(r.image, "image", sized=True)
        payload = {"prompt": r.prompt, "image": b64encode(r.image)}
        return self._job(
            "structural-edits",
            "structural_edit",
            r,
            r.n,
            payload,
            width=image.width,
            height=image.height,
            strength=r.strength,
        )

    def composition(self, r: schemas.CompositionRequest) -> Job:
        width, height = self._canvas(r.size)
        regions = [{"prompt": g.prompt, "box": g.box and list(g.box), "weight": g.weight} for g in r.regions]
        return self._job(
            "compositions", "multi_condition", r, r.n, {"regions": regions}, width=width, height=height
        )

    def interpolation(self, r: schemas.InterpolationRequest) -> Job:
        width, height = self._canvas(r.size)
        ends: dict[str, Any] = {}
        for end in ("start", "end"):
            prompt, image = getattr(r, f"{end}_prompt"), getattr(r, f"{end}_image")
            if image is not None:
                self._image(image, f"{end}_image")
                ends[end] = {"image": b64encode(image)}
            else:
                ends[end] = {"prompt": prompt}
        if r.frames > self.settings.max_frames:
            raise ApiError(400, "invalid_value", f"frames: at most {self.settings.max_frames}", "frames")
        seed = r.seed if r.seed is not None else _random_seed()
        payload = {**ends, "frames": r.frames, "mode": r.mode, "width": width, "height": height}
        return self._job("interpolations", "interpolate", r, r.frames, payload, seeds=[seed] * r.frames)

    def _job(
        self,
        endpoint: str,
        op: str,
        r: schemas.SamplerKnobs,
        n: int,
        payload: dict[str, Any],
        seeds: list[int] | None = None,
        **shared: Any,
    ) -> Job:
        """A Job whose key holds the operation, the `shared` values (canvas, pads...) and the knobs."""
        if n > self.settings.max_n and op != "interpolate":
            raise ApiError(400, "invalid_value", f"n: at most {self.settings.max_n}", "n")
        sampler = self._sampler(r)
        if seeds is None:
            seeds = (
                [r.seed + i for i in range(n)] if r.seed is not None else [_random_seed() for _ in range(n)]
            )
        key = json.dumps({"op": op, "sampler": sampler, **shared}, sort_keys=True, separators=(",", ":"))
        payload = {"op": op, "sampler": sampler, **shared, **payload}
        return Job.new(endpoint, key, payload, seeds, self.settings.request_timeout_s)

    def _sampler(self, r: schemas.SamplerKnobs) -> dict[str, Any]:
        """Every knob resolved to a value, so equal settings give equal keys however they were asked."""
        d = self.model.sampler
        typical = d.typical_filtering, d.typical_mass
        if "typical_mass" in r.model_fields_set:
            typical = (False, 0.0) if not r.typical_mass else (True, r.typical_mass)
        temp_range = list(d.temp_range) if r.temperature is None else [r.temperature, r.temperature]
        return {
            "steps": r.steps if r.steps is not None else d.steps,
            "guidance_scale": r.guidance_scale if r.guidance_scale is not None else d.guidance_scale,
            "temp_range": temp_range,
            "typical_filtering": typical[0],
            "typical_mass": typical[1],
        }

    def _canvas(self, size: str | None) -> tuple[int, int]:
        if size is None:
            return self.model.image_size, self.model.image_size
        return parse_size(size, multiple=self.model.size_multiple, max_side=self.settings.max_side)

    def _image(self, data: bytes, field: str, *, sized: bool = False) -> Image.Image:
        """A decoded upload; `sized` ones become the canvas, so they follow the size rules too."""
        s = self.settings
        image = open_image(data, field=field, max_bytes=s.max_body_bytes, max_pixels=s.max_image_pixels)
        if sized:
            check_side_rules(
                image.width, image.height, multiple=self.model.size_multiple, max_side=s.max_side, field=field
            )
        return image


def _random_seed() -> int:
    return secrets.randbelow(schemas.MAX_SEED - 16)
