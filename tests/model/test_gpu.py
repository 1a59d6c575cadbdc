"""Checks that need a CUDA device: run by scripts/gpu-tests.sh on the GPU machine, skipped in CI."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.clip import TEXT_ROWS
from model.denoiser import Upsample
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
    pipe.accelerate((1, 2, 4, 8), compile=False, text_rows=None)
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


def test_on_cuda_prompts_are_encoded_in_chunks_of_text_rows_by_one_graph(tiny_model_dir: Path) -> None:
    """The default fast path on CUDA: every prompt batch in chunks of `TEXT_ROWS` rows, so the text tower
    has one captured graph whatever the batch buckets, and a prompt's embedding is the same bits alone and
    among eleven others (two chunks, the last one padded)."""
    pipe = Pipeline.from_folder(tiny_model_dir, device="cuda", dtype=torch.bfloat16)
    pipe.accelerate((1, 2, 4, 8), compile=False)
    assert pipe.clip.text_rows == TEXT_ROWS
    pipe.warmup(4, width=32, height=32)
    tower = pipe.clip.text_tower
    assert isinstance(tower, BucketGraphs) and [key[0] for key in tower._graphs] == [TEXT_ROWS]
    prompts = [f"a red circle number {i}" for i in range(12)]
    with torch.inference_mode():
        together = pipe.clip._encode(prompts)
        for i in (0, 9, 11):
            assert torch.equal(pipe.clip._encode([prompts[i]])[0], together[i]), i


def test_cuda_upsample_is_the_transposed_convolution_and_its_rows_do_not_depend_on_the_batch() -> None:
    """`Upsample` on CUDA (a matrix product over 2x2 windows) against cuDNN's transposed convolution in
    float32 without TF32, and a row computed alone equal bit for bit to the same row inside batches of 2 to
    64."""
    torch.manual_seed(0)
    layer = Upsample(64, 32).cuda()
    x = torch.randn(64, 64, 16, 16, device="cuda").contiguous(memory_format=torch.channels_last)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            ours = layer(x)
            cudnn = F.conv_transpose2d(x, layer.weight, layer.bias, stride=2, padding=1)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert ours.shape == (64, 32, 32, 32)
    torch.testing.assert_close(ours, cudnn, rtol=1e-4, atol=1e-4)
    layer.half()
    with torch.no_grad():
        half = x.half()
        alone = layer(half[:1])
        for rows in (2, 8, 17, 64):
            assert torch.equal(layer(half[:rows])[:1], alone), rows
