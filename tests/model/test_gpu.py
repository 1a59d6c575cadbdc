"""Checks that need a CUDA device: run by scripts/gpu-tests.sh on the GPU machine, skipped in CI."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from model.graphs import CAPTURE_AFTER, BucketGraphs
from model.ops import Draw, Generate, Picture
from model.pipeline import Pipeline

pytestmark = pytest.mark.gpu


def test_bf16_tokens_of_a_seed_are_the_same_alone_or_in_a_batch_of_8(tiny_model_dir: Path) -> None:
    pipe = Pipeline.from_folder(tiny_model_dir, device="cuda", dtype=torch.bfloat16)
    prompts = ["a red circle", "a blue square", "a green triangle above a yellow circle", "a red circle"] * 2
    batch = [Draw(Generate(p, 32, 32), 100 + i, pipe.config.sampler) for i, p in enumerate(prompts)]
    together = pipe.tokens(batch)
    for i, d in enumerate(batch):
        assert torch.equal(pipe.tokens([d])[0], together[i]), i


def test_the_fast_path_warms_every_text_bucket_and_times_a_batch_on_the_device(tiny_model_dir: Path) -> None:
    """Captured graphs for every text bucket a batch can reach; a launched batch's device time by CUDA events
    (what timed launches learn from); a picture of another size than the canvas encoded with no capture."""
    pipe = Pipeline.from_folder(tiny_model_dir, device="cuda", dtype=torch.bfloat16)
    pipe.accelerate((1, 2, 4, 8), compile=False)
    pipe.warmup(4, width=32, height=32)
    tower = pipe.clip.text_tower
    assert isinstance(tower, BucketGraphs) and sorted(key[0] for key in tower._graphs) == [1, 2, 4, 8]
    batch = [Draw(Generate(f"a red circle {i}", 32, 32), i, pipe.config.sampler) for i in range(3)]
    launched = pipe.launch(batch, [()] * 3)
    timings: dict[str, float] = {}
    pictures, _ = pipe.collect(launched, timings)
    assert len(pictures) == 3 and not launched.running()
    seconds = launched.device_seconds()
    assert seconds is not None and seconds > 0 and timings["gpu"] == seconds
    captured = len(pipe._encode)
    tokens = pipe.encode([Picture.from_array(np.zeros((24, 32, 3), dtype=np.uint8))])
    assert tokens.shape[0] == 1 and len(pipe._encode) == captured


def test_a_setting_met_after_warmup_runs_uncaptured_then_is_captured_with_the_same_tokens(
    tiny_model_dir: Path,
) -> None:
    """Previews, which warm-up does not sample, run without a graph (no capture stalls the device) until
    their `CAPTURE_AFTER`-th batch, which is captured; every run gives the same tokens."""
    pipe = Pipeline.from_folder(tiny_model_dir, device="cuda", dtype=torch.bfloat16)
    pipe.accelerate((1, 2, 4), compile=False)
    pipe.warmup(4, width=32, height=32)
    batch = [Draw(Generate(f"a red circle {i}", 32, 32), i, pipe.config.sampler) for i in range(4)]
    rows = dataclasses.replace(pipe.rows(batch), snapshots=(pipe.config.sampler.steps - 2,))
    captured = len(pipe._sample)
    runs = [pipe.sample(rows) for _ in range(CAPTURE_AFTER + 1)]
    assert len(pipe._sample) == captured + 1
    assert pipe.graph_events["uncaptured"] == CAPTURE_AFTER - 1 and pipe.graph_events["late"] == 1
    for run in runs[1:]:
        assert torch.equal(run.tokens, runs[0].tokens) and torch.equal(run.snapshots, runs[0].snapshots)
