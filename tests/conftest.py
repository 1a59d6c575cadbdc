"""Shared fixtures: a tiny random Paella model folder, fast enough for every test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from model.clip import WordTokenizer
from model.config import CLIPConfig, DenoiserConfig, ModelConfig, SamplerConfig, VQGANConfig
from model.weights import write_random_folder

TINY_CAPTIONS = (
    "a red circle",
    "a blue square",
    "a green triangle above a yellow circle",
    "two small purple squares left of a big orange triangle",
)


def tiny_model_config() -> ModelConfig:
    """A tiny Paella: 32 x 32 pixels, f8 VQGAN (4 x 4 tokens), 64 codes, a 16-d word-level CLIP, 4 steps."""
    clip = CLIPConfig(
        model_name="tiny-clip",
        embed_dim=16,
        custom={
            "embed_dim": 16,
            "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
            "text_cfg": {"width": 32, "heads": 2, "layers": 1},
        },
        tokenizer="words",
        context_length=12,
    )
    return ModelConfig(
        name="tiny",
        denoiser=DenoiserConfig(
            num_labels=64, c_hidden=32, c_clip=16, c_r=8, down_levels=(1, 1), up_levels=(1, 1)
        ),
        vqgan=VQGANConfig(
            ch=32,
            ch_mult=(1, 1, 1, 1),
            num_res_blocks=1,
            attn_resolutions=(),
            z_channels=8,
            embed_dim=8,
            n_embed=64,
            resolution=32,
        ),
        clip=clip,
        sampler=SamplerConfig(steps=4, guidance_scale=2.0),
        image_size=32,
    )


def tiny_vocabulary() -> list[str]:
    return WordTokenizer.from_corpus(TINY_CAPTIONS).words


def write_tiny_model(path: Path, seed: int = 0) -> Path:
    """Write the tiny random model to `path` as a weight folder (vocab.json included)."""
    return write_random_folder(path, tiny_model_config(), tiny_vocabulary(), seed)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Paella weight folder (see `tiny_model_config`), written once per session."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A fresh Redis key prefix on the test Redis (`PAELLA_TEST_REDIS_URL`); its keys are deleted after."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis.Redis.from_url(os.environ.get("PAELLA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU checks run where there is a GPU (scripts/gpu-tests.sh on the GPU machine); skipped elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run scripts/gpu-tests.sh on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
