"""Frozen hyperparameters of the three networks and the sampler, with the Paella v1 presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

RenoiseMode = Literal["start", "prev", "rand"]


@dataclass(frozen=True)
class DenoiserConfig:
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
class VQGANConfig:
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

    @property
    def downscale(self) -> int:
        """Pixels per token along each side (8 for f8)."""
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class CLIPConfig:
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
class SamplerConfig:
    """Every knob of the Paella v1 sampler; defaults follow the reference code (T=12)."""

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

    def replace(self, **changes: Any) -> SamplerConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelConfig:
    """A whole Paella model as stored in a weight folder's config.json."""

    name: str
    denoiser: DenoiserConfig
    vqgan: VQGANConfig
    clip: CLIPConfig
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    image_size: int = 256  # the native square canvas, in pixels

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(
            name=d["name"],
            denoiser=_build(DenoiserConfig, d["denoiser"]),
            vqgan=_build(VQGANConfig, d["vqgan"]),
            clip=_build(CLIPConfig, d["clip"]),
            sampler=_build(SamplerConfig, d.get("sampler", {})),
            image_size=int(d.get("image_size", 256)),
        )


def _build(cls: type[Any], d: dict[str, Any]) -> Any:
    """Instantiate a config dataclass from JSON, turning lists back into tuples."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


PAELLA_V1_DENOISER = DenoiserConfig()
PAELLA_V1_VQGAN = VQGANConfig()
PAELLA_V1_CLIP = CLIPConfig()
PAELLA_V1_SAMPLER = SamplerConfig(steps=12, guidance_scale=5.0)
PAELLA_V1 = ModelConfig(
    name="paella-v1",
    denoiser=PAELLA_V1_DENOISER,
    vqgan=PAELLA_V1_VQGAN,
    clip=PAELLA_V1_CLIP,
    sampler=PAELLA_V1_SAMPLER,
    image_size=256,
)
