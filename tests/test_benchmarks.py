"""Helpers of the benchmark scripts whose mistakes would skew a GPU run's figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from benchmarks.batch_invariance import MatmulUpsample, upsampling
from benchmarks.pipeline_gpu import reference_mode
from benchmarks.support import differing
from benchmarks.targets import verdicts
from model.config import DenoiserConfig
from model.denoiser import Denoiser, Upsample, upsample_by_matmul

REPO = Path(__file__).resolve().parents[1]


def test_reference_mode_turns_tf32_off_inside_and_restores_the_precision_settings_after():
    """Inductor keys its compiled artefacts on the matmul precision: a leaked setting made a restarted
    process miss every artefact of the first warm-up."""
    settings = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)
    before = [s.fp32_precision for s in settings]
    with reference_mode():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert [s.fp32_precision for s in settings] == before


def test_differing_lists_the_share_of_each_image_that_differs_largest_first():
    a = torch.zeros(3, 2, 2, dtype=torch.int64)
    b = a.clone()
    b[0, 0, 0] = 1
    b[2] = 5
    assert differing(a, b) == [1.0, 0.25]


def test_upsampling_swaps_the_denoisers_upsampling_layers_and_puts_them_back():
    config = DenoiserConfig(
        num_labels=16, c_hidden=16, c_clip=8, c_r=8, down_levels=(1, 1, 1), up_levels=(1, 1, 1)
    )
    den = Denoiser(config)

    def kinds() -> list[type]:
        return [type(m) for m in den.modules() if isinstance(m, nn.ConvTranspose2d)]

    assert kinds() == [Upsample] * 2
    with upsampling(den, nn.ConvTranspose2d):
        assert kinds() == [nn.ConvTranspose2d] * 2
        with upsampling(den, MatmulUpsample):
            assert kinds() == [MatmulUpsample] * 2
        assert kinds() == [nn.ConvTranspose2d] * 2
    assert kinds() == [Upsample] * 2


def test_the_matmul_variant_computes_by_matmul_on_a_cpu_too():
    torch.manual_seed(0)
    layer = MatmulUpsample(4, 3).double()
    x = torch.randn(2, 4, 5, 3, dtype=torch.float64)
    assert torch.equal(layer(x), upsample_by_matmul(x, layer.weight, layer.bias))


def test_launch_policy_records_the_curve_it_simulated(tmp_path: Path) -> None:
    """The result carries the batch times it simulated and the date of their run, so it still says what it
    ran on after a later run of the card has taken the curve file's name."""
    curve = REPO / "benchmarks/results/pipeline_gpu_NVIDIA_H100_80GB_HBM3.2026-12-07.first.json"
    out = tmp_path / "policy.json"
    script = [sys.executable, str(REPO / "benchmarks/launch_policy.py"), "--curve", str(curve)]
    args = ["--rate", "40", "--seconds", "0.5", "--out", str(out)]
    subprocess.run(
        script + args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, timeout=120
    )
    result = json.loads(out.read_text())
    run = json.loads(curve.read_text())
    assert result["card_of_curve"] == run["card"] and result["date_of_curve"] == run["date"]
    assert result["curve_ms"] == {str(r["batch"]): r["latency_ms"] for r in run["fast"]}
    assert [r["policy"] for r in result["runs"]] == ["two in flight", "two in flight, timed", "one in flight"]
    assert all(r["requests"] > 0 and r["images_per_s"] > 0 for r in result["runs"])


def test_targets_read_the_committed_runs_as_they_stand() -> None:
    """The recorded runs, by their dated names: the H200's first run of 2026-11-29 met every target, its
    rerun missed the warm-up (190 s), and the H100's first run of 2026-12-07 is no H200, under 120 images/s
    and not batch invariant. The exit status says whether all were met."""
    results = REPO / "benchmarks" / "results"

    def missed(name: str) -> list[str]:
        return [v.what for v in verdicts(json.loads((results / name).read_text())) if not v.met]

    assert missed("pipeline_gpu_NVIDIA_H200.first.json") == []
    assert missed("pipeline_gpu_NVIDIA_H200.2026-11-29.json") == ["warm-up, first start (s)"]
    assert missed("pipeline_gpu_NVIDIA_H100_80GB_HBM3.2026-12-07.first.json") == [
        "card",
        "images/s at the best batch size",
        "a seed alone vs in its batch of 32",
    ]
    assert not any(v.met for v in verdicts({}))
    script = [sys.executable, str(REPO / "benchmarks/targets.py")]
    for name, status in (
        ("pipeline_gpu_NVIDIA_H200.first.json", 0),
        ("pipeline_gpu_NVIDIA_H200.2026-11-29.json", 1),
    ):
        done = subprocess.run([*script, str(results / name)], capture_output=True, text=True, timeout=60)
        assert done.returncode == status and done.stdout.count("NOT MET") == status
