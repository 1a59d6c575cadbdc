"""The `paella-mini` configuration: the three networks at small width for the 128 x 128 shapes world."""

from __future__ import annotations

from model.config import CLIPConfig, DenoiserConfig, ModelConfig, SamplerConfig, VQGANConfig

MINI_VQGAN = VQGANConfig(
    ch=32,
    ch_mult=(1, 2, 2, 3),
    num_res_blocks=1,
    attn_resolutions=(),
    z_channels=64,
    embed_dim=64,
    n_embed=1024,
    resolution=128,
    norm="channel",  # GroupNorm drew a droplet spot on these flat pictures (docs/paella-mini-2.md)
)
MINI_CLIP = CLIPConfig(
    model_name="paella-mini-clip",
    embed_dim=128,
    custom={
        "embed_dim": 128,
        "vision_cfg": {"image_size": 128, "patch_size": 16, "width": 128, "layers": 4, "head_width": 32},
        "text_cfg": {"width": 128, "heads": 4, "layers": 4},
    },
    tokenizer="words",
    context_length=24,
)
MINI_DENOISER = DenoiserConfig(
    num_labels=MINI_VQGAN.n_embed,
    c_hidden=256,
    c_clip=MINI_CLIP.embed_dim,
    c_r=64,
    down_levels=(3, 3, 3),
    up_levels=(3, 3, 3),
)
# Guidance 2 with typical mass 0.5 won a sweep on the tuning prompts (`python -m training eval --seed 1000`)
# over guidance 1 to 3.5 and typical mass 0.2 to 0.8: higher guidance drew more artefacts and wrong
# shapes, guidance 1 lost inpainting; docs/paella-mini-2.md has the table.
MINI_SAMPLER = SamplerConfig(steps=8, guidance_scale=2.0, temp_range=(1.0, 1.0), typical_mass=0.5)
PAELLA_MINI = ModelConfig(
    name="paella-mini",
    denoiser=MINI_DENOISER,
    vqgan=MINI_VQGAN,
    clip=MINI_CLIP,
    sampler=MINI_SAMPLER,
    image_size=128,
)
