"""The VQGAN trainer's code-usage tools: the usage term rewards sharp codes spread over many codes, and a
dead-code reset re-seeds only the unused codes, from used ones."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from model.vqgan import VQGAN
from tests.training.test_smoke import TINY_VQGAN
from training.train_vqgan import reset_dead_codes, train_vqgan, usage_loss

N = 16  # codes


def sharp(codes: torch.Tensor) -> torch.Tensor:
    """Logits (1, N, h, w) putting each position surely on `codes` (h, w)."""
    return 50.0 * torch.nn.functional.one_hot(codes, N).permute(2, 0, 1)[None].float()


def test_the_usage_term_prefers_sharp_choices_spread_over_many_codes() -> None:
    one_code = usage_loss(sharp(torch.zeros(4, 4, dtype=torch.int64)))
    every_code = usage_loss(sharp(torch.arange(16).view(4, 4)))
    undecided = usage_loss(torch.zeros(1, N, 4, 4))
    assert abs(one_code.item()) < 1e-3 and abs(undecided.item()) < 1e-3
    assert abs(every_code.item() + 1) < 1e-3  # the best it gets: -1


def test_its_gradient_moves_positions_off_a_crowded_code() -> None:
    logits = sharp(torch.zeros(4, 4, dtype=torch.int64)) / 10 + 0.01 * torch.randn(1, N, 4, 4)
    logits.requires_grad_(True)
    before = logits.softmax(1).mean((0, 2, 3))[0].item()
    usage_loss(logits).backward()
    assert logits.grad is not None
    after = (logits - 5.0 * logits.grad).softmax(1).mean((0, 2, 3))[0].item()
    assert after < before  # the crowded code loses mass to the others


def test_a_reset_reseeds_only_dead_codes_from_used_ones() -> None:
    torch.manual_seed(0)
    vqgan = VQGAN(TINY_VQGAN)
    q = vqgan.quantize
    n = q.embed.weight.shape[0]
    used = torch.zeros(n, dtype=torch.bool)
    used[:3] = True
    proj, embed, bias = q.proj.weight.clone(), q.embed.weight.clone(), q.proj.bias.clone()
    assert reset_dead_codes(vqgan, used, torch.Generator().manual_seed(1)) == n - 3
    assert torch.equal(q.proj.weight[:3], proj[:3]) and torch.equal(q.embed.weight[:3], embed[:3])
    for k in range(3, n):  # each dead code is now close to one used code, and a little less likely
        source = int(torch.cdist(q.embed.weight[k : k + 1], embed[:3]).argmin())
        assert torch.allclose(q.embed.weight[k], embed[source], atol=0.1 * embed[:3].abs().mean().item())
        assert torch.isclose(q.proj.bias[k], bias[source] - 1.0)
    assert reset_dead_codes(vqgan, torch.ones(n, dtype=torch.bool), torch.Generator()) == 0


def test_the_trainer_records_its_usage_settings(tmp_path: Path) -> None:
    from safetensors import safe_open

    path = train_vqgan(
        tmp_path, steps=4, batch=2, config=TINY_VQGAN, check_pictures=2, usage_weight=0.1, reset_every=2
    )
    with safe_open(str(path), "pt") as f:
        train = json.loads(f.metadata()["train"])
    assert train["usage_weight"] == 0.1 and train["reset_every"] == 2 and train["codes_reset"] >= 0
