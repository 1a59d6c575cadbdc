"""Request and response models of the HTTP API; every bound here shows in the OpenAPI document.

Every field of OpenAI's Images API that its official client sends is accepted: honoured where Paella has
the notion (the README's compatibility table says which), accepted and ignored where it has none.
"""

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


def _one_image(value: Any) -> Any:
    """OpenAI's clients may send a list of images; Paella edits one."""
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(f"one image to edit, got {len(value)}")
        return value[0]
    return value


OneImage = Annotated[ImageBytes, BeforeValidator(_one_image)]
Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="what to draw")]
Size = Annotated[
    str,
    Field(
        pattern=r"^(\d{1,5}x\d{1,5}|auto)$",
        description="WIDTHxHEIGHT in pixels: multiples of the model's size_multiple (GET /v1/models), "
        "from twice it to PAELLA_MAX_SIDE; auto or null = the model's native canvas",
        examples=["256x256"],
    ),
]
Quality = Literal["low", "medium", "high", "xhigh", "max", "auto", "standard", "hd"]
ResponseFormat = Literal["b64_json", "url"]
OutputFormat = Literal["png", "jpeg", "webp", "gif"]
Background = Literal["transparent", "opaque", "auto"]


def ignored() -> Any:
    """A field OpenAI's clients send that Paella has no use for: accepted and ignored."""
    return Field(default=None, description="accepted for OpenAI's clients, ignored")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageOptions(Strict):
    """Every image endpoint's settings: the model, how the images come back, and the sampler knobs (left out
    or null = the model's default)."""

    model: str | None = Field(
        default=None,
        description="a model id from GET /v1/models; null = the default model (PAELLA_DEFAULT_MODEL, else "
        "the first listed)",
    )
    response_format: ResponseFormat | None = Field(
        default=None,
        description="b64_json (null): the images in the answer; url: links that live PAELLA_IMAGE_TTL_S",
    )
    output_format: OutputFormat | None = Field(default=None, description="the images' encoding; null = png")
    output_compression: int | None = Field(
        default=None, ge=0, le=100, description="JPEG and WebP quality, 0-100; null = 100"
    )
    quality: Quality | None = Field(
        default=None,
        description="a step count relative to the model's: low 1/2, medium, standard and auto 1, high and "
        "hd 3/2, xhigh 2, max 3 (at most 64); `steps` wins when both are given",
    )
    background: Background | None = Field(
        default=None, description="accepted; the images are always opaque (the answer says so)"
    )
    user: str | None = Field(default=None, description="echoed as safety_identifier when that is not given")
    safety_identifier: str | None = Field(default=None, description="echoed in the answer")

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


class ManyImages(ImageOptions):
    n: int = Field(default=1, ge=1, le=8, description="number of images")


class Streamable(ManyImages):
    """OpenAI's generations and edits: previews streamed as Server-Sent Events, and fields of features
    Paella does not have (animated GIFs, SVG, planning effort)."""

    stream: bool | None = Field(
        default=None, description="answer Server-Sent Events: partial images, then each image completed"
    )
    partial_images: int | None = Field(
        default=None, ge=0, le=3, description="with stream: previews per image, from steps spread evenly"
    )
    complexity: Literal["low", "medium", "high"] | None = ignored()
    frame_count: int | None = Field(default=None, ge=2, le=16, description="accepted, ignored (still images)")
    frame_duration_ms: int | None = Field(default=None, ge=0, description="accepted, ignored")
    svg: dict[str, Any] | None = ignored()


class GenerationRequest(Streamable):
    prompt: Prompt
    negative_prompt: str | None = Field(
        default=None, max_length=MAX_PROMPT_CHARS, description="what to steer away from"
    )
    size: Size | None = None
    style: Literal["vivid", "natural"] | None = ignored()
    moderation: Literal["low", "auto"] | None = ignored()


class EditRequest(Streamable):
    """Inpainting: transparent mask pixels (or the image's own transparent pixels) are repainted."""

    image: OneImage
    mask: ImageBytes | None = Field(
        default=None, description="PNG of the image's size; fully transparent pixels are repainted"
    )
    prompt: Prompt
    size: Size | None = Field(
        default=None,
        description="the answer's WIDTHxHEIGHT: the image and mask are resized to it first; auto or null = "
        "the image's own size",
        examples=["256x256"],
    )
    input_fidelity: Literal["high", "low"] | None = ignored()
    markup: Any = ignored()


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


class InterpolationRequest(ImageOptions):
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
    b64_json: str | None = Field(default=None, description="the image, base64 (response_format b64_json)")
    url: str | None = Field(default=None, description="where to fetch the image (response_format url)")
    seed: int = Field(description="the seed that drew this image")


class ImagesResponse(BaseModel):
    created: int = Field(description="Unix time of the answer")
    data: list[ImageDatum]
    background: Literal["opaque"] = "opaque"
    output_format: OutputFormat
    size: str = Field(description="WIDTHxHEIGHT of the images")
    quality: Literal["low", "medium", "high", "xhigh", "max"] | None = Field(
        default=None, description="the quality the request named, if it names a level"
    )
    safety_identifier: str | None = None


class SamplerDefaults(BaseModel):
    steps: int
    guidance_scale: float = Field(description="negative = guidance off")
    temperature: float = Field(description="the first step's; the sampler may anneal it")
    typical_mass: float = Field(description="0 = typical filtering off")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "paella-serve"
    image_size: int = Field(description="native square canvas in pixels")
    size_multiple: int = Field(
        description="widths and heights must be multiples of this, and at least twice it"
    )
    max_side: int = Field(description="largest width or height, in pixels")
    sampler: SamplerDefaults = Field(description="what the knobs left out become")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: str
