"""Checks that need a CUDA device: run by scripts/gpu-tests.sh on the GPU machine, skipped in CI."""

from pathlib import Path

import pytest
import torch

from model.ops import Draw, Generate
from model.pipeline import Pipeline

pytestmark = pytest.mark.gpu


def test_bf16_tokens_of_a_seed_are_the_same_alone_or_in_a_batch_of_8(tiny_model_dir: Path) -> None:
    pipe = Pipeline.from_folder(tiny_model_dir, device="cuda", dtype=torch.bfloat16)
    prompts = ["a red circle", "a blue square", "a green triangle above a yellow circle", "a red circle"] * 2
    batch = [Draw(Generate(p, 32, 32), 100 + i, pipe.config.sampler) for i, p in enumerate(prompts)]
    together = pipe.tokens(batch)
    for i, d in enumerate(batch):
        assert torch.equal(pipe.tokens([d])[0], together[i]), i
