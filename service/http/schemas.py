"""Request and response models of the HTTP API; every bound here shows in the OpenAPI document."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import core_schema as cs

from model.ops import Region

MAX_SEED = 2**31 - 1
MAX_PROMPT_CHARS = 2000
MAX_PAD = 1024


def _decode_image(value: Any) -> Any:
    """Multipart uploads arrive as bytes; JSON carries base64 (a `data:` URL prefix is allowed)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        if value.startswith("data:"):
            value = value.partition(",")[2]
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not valid base64") from None
    raise ValueError("expected a base64 string or a file upload")


ImageBytes = Annotated[
    bytes,
    BeforeValidator(_decode_image),
    WithJsonSchema(
        {
            "type": "string",
            "contentEncoding": "base64",
            "description": "PNG, JPEG or WebP: base64 in JSON, a file part in multipart/form-data",
        }
    ),
]
Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="what to draw")]
Size = Annotated[
    str,
    Field(
        pattern=r"^\d{1,5}x\d{1,5}$",
        description="WIDTHxHEIGHT in pixels: multiples of the model's size_multiple (GET /v1/models), "
        "from twice it to PAELLA_MAX_SIDE; null = the model's native canvas",
        examples=["256x256"],
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplerKnobs(Strict):
    """Sampler settings every endpoint shares; left out or null = the model's default."""

    seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="image i uses seed + i; null = random seeds, returned per image",
    )
    steps: int | None = Field(default=None, ge=1, le=64, description="denoising steps")
    guidance_scale: float | None = Field(
        default=None,
        ge=-1.0,
        le=30.0,
        description="classifier-free guidance weight; negative turns guidance off",
    )
    temperature: float | None = Field(default=None, gt=0.0, le=5.0, description="sampling temperature")
    typical_mass: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="locally typical sampling mass; left out = model default, null or 0 = filtering off",
    )
    response_format: Literal["b64_json"] = Field(
        default="b64_json", description="images come back as base64 PNG"
    )


class ManyImages(SamplerKnobs):
    n: int = Field(default=1, ge=1, le=8, description="number of images")


class GenerationRequest(ManyImages):
    prompt: Prompt
    negative_prompt: str | None = Field(
        default=None, max_length=MAX_PROMPT_CHARS, description="what to steer away from"
    )
    size: Size | None = None


class EditRequest(ManyImages):
    """Inpainting: transparent mask pixels (or the image's own transparent pixels) are repainted."""

    image: ImageBytes
    mask: ImageBytes | None = Field(
        default=None, description="PNG of the image's size; fully transparent pixels are repainted"
    )
    prompt: Prompt


class OutpaintRequest(ManyImages):
    image: ImageBytes
    prompt: Prompt
    left: int = Field(default=0, ge=0, le=MAX_PAD, description="pixels to add on the left")
    right: int = Field(default=0, ge=0, le=MAX_PAD, description="pixels to add on the right")
    up: int = Field(default=0, ge=0, le=MAX_PAD, description="pixels to add on top")
    down: int = Field(default=0, ge=0, le=MAX_PAD, description="pixels to add below")

    @model_validator(mode="after")
    def _some_padding(self) -> OutpaintRequest:
        if not (self.left or self.right or self.up or self.down):
            raise ValueError("at least one of left, right, up, down must be positive")
        return self


class VariationRequest(ManyImages):
    image: ImageBytes
    size: Size | None = None


class StructuralEditRequest(ManyImages):
    image: ImageBytes
    prompt: Prompt
    strength: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="0 keeps the input's structure exactly, 1 samples from scratch",
    )


class InterpolationRequest(SamplerKnobs):
    """Frames between two prompts or two images; every frame shares one seed."""

    start_prompt: Prompt | None = None
    end_prompt: Prompt | None = None
    start_image: ImageBytes | None = None
    end_image: ImageBytes | None = None
    frames: int = Field(default=8, ge=2, le=16, description="frames, both ends included")
    mode: Literal["lerp", "slerp"] = Field(default="slerp", description="how conditionings are interpolated")
    size: Size | None = None

    @model_validator(mode="after")
    def _one_of_each(self) -> InterpolationRequest:
        for end in ("start", "end"):
            given = (getattr(self, f"{end}_prompt") is not None) + (getattr(self, f"{end}_image") is not None)
            if given != 1:
                raise ValueError(f"give exactly one of {end}_prompt and {end}_image")
        return self


def _region_schema(_source: Any, _handler: GetCoreSchemaHandler) -> cs.CoreSchema:
    """Validate straight into the model's `Region` (which checks its own box and weight), with the
    HTTP side's bounds in the schema."""
    unit = cs.float_schema(ge=0.0, le=1.0)
    fields = [
        cs.dataclass_field("prompt", cs.str_schema(min_length=1, max_length=MAX_PROMPT_CHARS)),
        cs.dataclass_field(
            "box",
            cs.with_default_schema(cs.nullable_schema(cs.tuple_schema([unit] * 4)), default=None),
            metadata={"pydantic_js_updates": {"description": BOX}},
        ),
        cs.dataclass_field(
            "weight",
            cs.with_default_schema(cs.float_schema(gt=0.0, le=10.0), default=1.0),
            metadata={"pydantic_js_updates": {"description": "how strongly overlapping regions count"}},
        ),
    ]
    args = cs.dataclass_args_schema("Region", fields, extra_behavior="forbid")
    return cs.dataclass_schema(Region, args, ["prompt", "box", "weight"], ref="Region", post_init=True)


BOX = "[left, top, right, bottom] as fractions of the canvas; null = all of it"
RegionField = Annotated[Region, GetPydanticSchema(_region_schema)]


class CompositionRequest(ManyImages):
    """Multi-conditioning: a prompt per region, or a blend of prompts when regions have no box."""

    regions: list[RegionField] = Field(min_length=1, max_length=8)
    size: Size | None = None


class ImageDatum(BaseModel):
    b64_json: str = Field(description="the PNG, base64")
    seed: int = Field(description="the seed that drew this image")


class ImagesResponse(BaseModel):
    created: int = Field(description="Unix time of the answer")
    data: list[ImageDatum]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "paella-serve"
    image_size: int = Field(description="native square canvas in pixels")
    size_multiple: int = Field(
        description="widths and heights must be multiples of this, and at least twice it"
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: str
