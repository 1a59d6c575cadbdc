"""The fused Triton picker computes what the PyTorch picker computes: checked through Triton's interpreter
on the CPU (in a subprocess, which the interpreter needs from its start), and natively on a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.sampler import Rows, pick_codes

REPO = Path(__file__).resolve().parents[2]
triton = pytest.importorskip("triton")


def rows(device: str = "cpu", typical: bool = True, packed: bool = False) -> Rows:
    """Four rows of settings; `packed`: as views into one float and one int tensor, as `build_rows` makes
    them (strided, not contiguous)."""
    t = torch.tensor
    out = Rows(
        cond=t([]),
        uncond=t([]),
        seeds=t([]),
        init=t([]),
        mask=t([]),
        from_noise=t([]),
        guidance=t([-1.0, 0.3, 4.0, 0.7], device=device),
        temperature=t([[1.0, 0.5], [0.0, 2.0], [1.0, 1.0], [0.7, 1.3]], device=device),
        typical_mass=t([0.2, 0.0, 0.6, 0.05], device=device),
        min_tokens=t([1, 1, 1, 9], device=device),
        start_step=t([]),
        renoise_steps=t([]),
        renoise_mode=t([]),
        typical=typical,
    )
    if packed:
        floats = torch.cat([out.guidance[:, None], out.typical_mass[:, None], out.temperature], 1)
        ints = torch.stack([out.min_tokens * 0 + 7, out.min_tokens], 1)
        out.guidance, out.typical_mass, out.temperature = floats[:, 0], floats[:, 1], floats[:, 2:]
        out.min_tokens = ints[:, 1]
        assert not out.temperature.is_contiguous() and not out.guidance.is_contiguous()
    return out


def compare(device: str) -> list[float]:
    """Agreement of the fused and the PyTorch picks, over peaked and flat rows, guided or not, each step."""
    from model.kernels import pick_codes_fused

    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([4.0, 0.5, 2.0, 8.0])[:, None, None, None]  # peaked and flat distributions
    cond = (torch.randn(4, 2, 3, 200, generator=g) * scale).to(device)
    uncond = (torch.randn(4, 2, 3, 200, generator=g) * scale).to(device)
    u = torch.rand(4, 2, 3, generator=g).to(device)
    out = []
    for typical, packed in ((True, False), (False, False), (True, True)):
        for step in (0, 1):
            for un in (uncond, None):
                r = rows(device, typical, packed)
                out.append(
                    (pick_codes(cond, un, r, u, step) == pick_codes_fused(cond, un, r, u, step))
                    .float()
                    .mean()
                    .item()
                )
    return out


def test_the_fused_pick_matches_pytorch_in_the_interpreter() -> None:
    script = "from tests.model.test_kernels import compare; print(min(compare('cpu')))"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[-1]) == 1.0


@pytest.mark.gpu
def test_the_fused_pick_matches_pytorch_on_the_gpu() -> None:
    assert min(compare("cuda")) >= 0.99  # sums in another order: a boundary code may differ
