"""A few CPU steps of every trainer at tiny width, then pack, load through the Pipeline and generate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import CLIPConfig, DenoiserConfig, ModelConfig, SamplerConfig, VQGANConfig
from model.ops import Draw, Generate
from model.pipeline import Pipeline
from model.weights import read_folder
from training.pack import pack
from training.train_clip import train_clip
from training.train_denoiser import train_denoiser
from training.train_vqgan import train_vqgan

TINY_VQGAN = VQGANConfig(
    ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, attn_resolutions=(), z_channels=32, embed_dim=32,
    n_embed=64, resolution=128,
)  # fmt: skip
TINY_CLIP = CLIPConfig(
    model_name="tiny",
    embed_dim=32,
    custom={
        "embed_dim": 32,
        "vision_cfg": {"image_size": 128, "patch_size": 32, "width": 32, "layers": 1, "head_width": 16},
        "text_cfg": {"width": 32, "heads": 2, "layers": 1},
    },
    tokenizer="words",
    context_length=24,
)
TINY = ModelConfig(
    name="tiny",
    denoiser=DenoiserConfig(
        num_labels=64, c_hidden=64, c_clip=32, c_r=16, down_levels=(1, 1, 1), up_levels=(1, 1, 1)
    ),
    vqgan=TINY_VQGAN,
    clip=TINY_CLIP,
    sampler=SamplerConfig(steps=2, guidance_scale=2.0),
    image_size=128,
)


def losses(path: Path, key: str = "loss") -> list[float]:
    return [json.loads(line)[key] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parts")
    train_vqgan(out, steps=3, batch=4, config=TINY_VQGAN, check_pictures=4)
    train_clip(out, steps=3, batch=8, config=TINY_CLIP, check_retrieval=False)
    train_denoiser(
        out,
        vqgan=out / "vqgan.safetensors",
        clip=out / "clip.safetensors",
        steps=3,
        batch=4,
        config=TINY.denoiser,
        vqgan_config=TINY_VQGAN,
        clip_config=TINY_CLIP,
    )
    return out


def test_trainers_log_finite_losses_and_save_one_file_each(parts: Path) -> None:
    for name in ("vqgan", "clip", "denoiser"):
        assert (parts / f"{name}.safetensors").is_file()
        logged = losses(parts / f"{name}.log.jsonl")
        assert logged and all(math.isfinite(v) for v in logged)
    # the denoiser starts near the entropy of uniform codes, ln(64)
    assert abs(losses(parts / "denoiser.log.jsonl")[0] - math.log(64)) < 1.0


def test_pack_loads_through_the_pipeline_and_generates(parts: Path, tmp_path: Path) -> None:
    folder = pack(
        tmp_path / "tiny",
        parts={n: parts / f"{n}.safetensors" for n in ("vqgan", "clip", "denoiser")},
        config=TINY,
    )
    names = {p.name for p in folder.iterdir()}
    assert names == {"config.json", "manifest.json", "README.md", "vocab.json"} | {
        f"{n}.safetensors" for n in ("vqgan", "clip", "denoiser")
    }
    config, tensors = read_folder(folder)
    assert config == TINY
    assert all(t.dtype == torch.float16 for t in tensors["denoiser"].values() if t.is_floating_point())
    pipe = Pipeline.from_folder(folder)
    op = Generate("a large red circle in the center on a blue background", 128, 128)
    (image,) = pipe.images([Draw(op, 0, config.sampler)])
    assert np.asarray(image).shape == (128, 128, 3)


def test_pack_refuses_parts_of_another_config(parts: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trained with"):
        pack(tmp_path / "mini", parts={n: parts / f"{n}.safetensors" for n in ("vqgan", "clip", "denoiser")})


def test_eval_reports_every_check_in_range(parts: Path, tmp_path: Path) -> None:
    from training.eval import evaluate

    folder = pack(
        tmp_path / "tiny",
        parts={n: parts / f"{n}.safetensors" for n in ("vqgan", "clip", "denoiser")},
        config=TINY,
    )
    report = evaluate(Pipeline.from_folder(folder), n_seen=2, n_held_out=2, n_ops=2, n_psnr=2, batch=2)
    gen = report["generation"]
    assert gen["seen"]["n"] == 2 and gen["held_out"]["n"] == 2
    assert all(0 <= gen[s][a] <= 1 for s in ("seen", "held_out") for a in ("background", "color", "all"))
    assert report["vqgan_psnr"]["fresh"] > 0
    assert report["inpainting"]["new_object"]["n"] == 2 and report["inpainting"]["unmasked_mae"] >= 0
    assert 0 <= report["outpainting"]["new_area_background"] <= 1
    assert report["variations"]["same_as_source"]["n"] == 2
    assert report["two_objects"]["n"] == 2 and 0 <= report["two_objects"]["both_right"] <= 1
    assert report["compositions"]["regions"] == 4 and 0 <= report["compositions"]["region_right"] <= 1
    assert 0 < report["vqgan_psnr"]["codes_used"] <= 1
    assert report["vqgan_psnr"]["recon_artefact_pixels"]["n"] == 2
    assert gen["artefact_pixels"]["n"] == 4 and gen["artefact_pixels"]["median"] >= 0
    json.dumps(report)
    # the model card shows every check next to its target, with the seed of the figures
    card = (
        pack(
            tmp_path / "tiny-card",
            parts={n: parts / f"{n}.safetensors" for n in ("vqgan", "clip", "denoiser")},
            config=TINY,
            results=report,
        )
        .joinpath("README.md")
        .read_text()
    )
    for target in (">= 98% each", ">= 95% each", "0 / <= 4", ">= 50% / >= 34 dB", ">= 90% / < 3/255"):
        assert target in card
    assert f"{100 * report['compositions']['region_right']:.1f}%" in card
    assert "seed 0." in card and "scripts/train-mini.sh codes" in card
    assert "reconstructed one-object picture" in card
