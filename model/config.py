"""Frozen hyperparameters of the three networks and the sampler, the Paella v1 presets, the size
rules of a model's canvas and the meaning of a request's sampler knobs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Self

RenoiseMode = Literal["start", "prev", "rand"]
RENOISE_MODES: tuple[RenoiseMode, ...] = ("start", "prev", "rand")


class _FromDict:
    """`from_dict`: a config dataclass from JSON, lists back to tuples, unknown keys refused."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class DenoiserConfig(_FromDict):
    """The convolutional token denoiser (`DenoiseUNet` of Paella v1)."""

    num_labels: int = 8192
    c_hidden: int = 1280
    c_clip: int = 1024
    c_r: int = 64
    down_levels: tuple[int, ...] = (4, 8, 16)
    up_levels: tuple[int, ...] = (16, 8, 4)

    @property
    def c_levels(self) -> tuple[int, ...]:
        """Channel width of each level, shallow to deep (320, 640, 1280 for v1)."""
        return tuple(self.c_hidden // 2**i for i in reversed(range(len(self.down_levels))))

    @property
    def c_cond(self) -> int:
        return self.c_clip + self.c_r

    @property
    def grid_multiple(self) -> int:
        """Token grids must be divisible by this (one halving per level after the first)."""
        return 2 ** (len(self.down_levels) - 1)


@dataclass(frozen=True)
class VQGANConfig(_FromDict):
    """The taming-transformers f8 VQGAN with a Gumbel quantizer (ruDALL-E's `gumbelf8-sber`)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (32,)
    z_channels: int = 256
    embed_dim: int = 256
    n_embed: int = 8192
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    double_z: bool = False
    dropout: float = 0.0
    # "group": v1's GroupNorm(32); "channel": per-position LayerNorm (`model.vqgan.ChannelNorm`)
    norm: str = "group"

    @property
    def downscale(self) -> int:
        """Pixels per token along each side (8 for f8)."""
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class CLIPConfig(_FromDict):
    """An OpenCLIP model: a built-in architecture by name, or a custom open_clip config dict.

    `tokenizer` is "open_clip" (the BPE tokenizer shipped inside open_clip) or "words" (a
    word-level vocabulary stored beside the weights, for small models trained on a closed world).
    """

    model_name: str = "ViT-g-14"
    embed_dim: int = 1024
    custom: dict[str, Any] | None = None
    tokenizer: Literal["open_clip", "words"] = "open_clip"
    context_length: int = 77


@dataclass(frozen=True)
class Knobs:
    """A request's sampler settings over the model's defaults; None keeps the default.

    `temperature` is one temperature for every step; `typical_mass` 0 turns locally typical
    filtering off.
    """

    steps: int | None = None
    guidance_scale: float | None = None
    temperature: float | None = None
    typical_mass: float | None = None


@dataclass(frozen=True)
class SamplerConfig(_FromDict):
    """Every knob of the Paella v1 sampler; defaults follow the reference code (T=12; the v1 preset and the
    paper's headline use 8)."""

    steps: int = 12
    renoise_steps: int | None = None  # None means steps - 1
    renoise_mode: RenoiseMode = "start"
    temp_range: tuple[float, float] = (1.0, 1.0)
    typical_filtering: bool = True
    typical_mass: float = 0.2
    typical_min_tokens: int = 1
    guidance_scale: float = -1.0  # classifier-free guidance; off when < 0
    start_step: int = 0

    @property
    def effective_renoise_steps(self) -> int:
        return self.steps - 1 if self.renoise_steps is None else self.renoise_steps

    @property
    def guided(self) -> bool:
        return self.guidance_scale >= 0

    @property
    def mass(self) -> float:
        """The typical mass in force: 0 when filtering is off."""
        return self.typical_mass if self.typical_filtering else 0.0

    def replace(self, **changes: Any) -> SamplerConfig:
        return dataclasses.replace(self, **changes)

    def with_knobs(self, knobs: Knobs) -> SamplerConfig:
        """This config with a request's knobs applied; equal settings give equal configs however asked."""
        changes: dict[str, Any] = {}
        if knobs.steps is not None:
            changes["steps"] = knobs.steps
        if knobs.guidance_scale is not None:
            changes["guidance_scale"] = knobs.guidance_scale
        if knobs.temperature is not None:
            changes["temp_range"] = (knobs.temperature, knobs.temperature)
        if knobs.typical_mass is not None:
            changes["typical_filtering"] = knobs.typical_mass > 0
            changes["typical_mass"] = knobs.typical_mass
        out = dataclasses.replace(self, **changes)
        return out if out.typical_filtering else dataclasses.replace(out, typical_mass=0.0)


@dataclass(frozen=True)
class ModelConfig:
    """A whole Paella model as stored in a weight folder's config.json, and its canvas rules."""

    name: str
    denoiser: DenoiserConfig
    vqgan: VQGANConfig
    clip: CLIPConfig
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    image_size: int = 256  # the native square canvas, in pixels

    @property
    def downscale(self) -> int:
        """Pixels per token along each side."""
        return self.vqgan.downscale

    @property
    def size_multiple(self) -> int:
        """Canvas sides must be multiples of this: a whole number of tokens at every denoiser level."""
        return self.vqgan.downscale * self.denoiser.grid_multiple

    @property
    def min_side(self) -> int:
        """The least canvas side: the denoiser's deepest level needs two rows to pad."""
        return 2 * self.size_multiple

    def grid(self, width: int, height: int) -> tuple[int, int]:
        """The token grid (h, w) of a canvas; ValueError when the canvas breaks the size rules."""
        m = self.size_multiple
        if min(width, height) < self.min_side or width % m or height % m:
            raise ValueError(
                f"width and height must be multiples of {m}, at least {self.min_side}, got {width}x{height}"
            )
        return height // self.downscale, width // self.downscale

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(
            name=d["name"],
            denoiser=DenoiserConfig.from_dict(d["denoiser"]),
            vqgan=VQGANConfig.from_dict(d["vqgan"]),
            clip=CLIPConfig.from_dict(d["clip"]),
            sampler=SamplerConfig.from_dict(d.get("sampler", {})),
            image_size=int(d.get("image_size", 256)),
        )


PAELLA_V1_DENOISER = DenoiserConfig()
PAELLA_V1_VQGAN = VQGANConfig()
PAELLA_V1_CLIP = CLIPConfig()
PAELLA_V1_SAMPLER = SamplerConfig(steps=8, guidance_scale=5.0)  # the paper's headline: 8 steps
PAELLA_V1 = ModelConfig(
    name="paella-v1",
    denoiser=PAELLA_V1_DENOISER,
    vqgan=PAELLA_V1_VQGAN,
    clip=PAELLA_V1_CLIP,
    sampler=PAELLA_V1_SAMPLER,
    image_size=256,
)
