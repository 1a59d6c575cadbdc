"""Finite scalar quantization and its exact export into v1's Gumbel quantizer layout."""

from __future__ import annotations

from pathlib import Path

import torch

from model.config import VQGANConfig
from model.vqgan import VQGAN, GumbelQuantizer
from training.fsq import FSQ
from training.loop import load_part
from training.train_vqgan import swap_tokens, train_vqgan


def test_rounding_picks_the_nearest_level_and_indexes_the_grid() -> None:
    torch.manual_seed(0)
    fsq = FSQ(8, (4, 4, 4, 4, 4))
    assert fsq.n_codes == 1024
    x = torch.randn(2, 8, 6, 6) * 3
    q, index = fsq(x)
    assert q.shape == x.shape and index.shape == (2, 6, 6)
    b = fsq.bounded(x)
    j = fsq.level_indices(x)
    values = j.float() - 1.5
    assert bool(((b - values).abs() <= 0.5 + 1e-6).all())  # nearest of -1.5, -0.5, 0.5, 1.5
    grid = fsq.grid()
    assert grid.shape == (1024, 5)
    assert torch.equal(grid[index.flatten()], values.permute(0, 2, 3, 1).reshape(-1, 5))
    assert int(index.min()) >= 0 and int(index.max()) < 1024


def test_export_gives_the_same_codes_and_codebook_rows_through_argmax() -> None:
    torch.manual_seed(1)
    fsq = FSQ(16, (4, 4, 4, 4, 4)).double()
    gumbel = GumbelQuantizer(16, 16, 1024).double()
    fsq.export(gumbel)
    x = torch.randn(4, 16, 8, 8, dtype=torch.float64) * 2
    q, index = fsq(x)
    logits = gumbel.proj(x)  # (B, 1024, h, w)
    assert torch.equal(logits.argmax(1), index)
    rows = gumbel.embed(index).permute(0, 3, 1, 2)
    torch.testing.assert_close(rows, q, rtol=1e-6, atol=1e-6)  # float32 copies


def test_the_trainer_stores_an_fsq_vqgan_in_the_v1_layout(tmp_path: Path) -> None:
    config = VQGANConfig(
        ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, attn_resolutions=(), z_channels=32, embed_dim=32,
        n_embed=1024, resolution=128,
    )  # fmt: skip
    path = train_vqgan(
        tmp_path, steps=4, batch=4, config=config, check_pictures=8, quantizer="fsq", token_noise=0.1
    )  # steps 2 and 3 swap tokens
    state, meta = load_part(path)
    assert meta["train"]["quantizer"] == "fsq" and meta["train"]["fsq_levels"] == [4, 4, 4, 4, 4]
    assert meta["train"]["token_noise"] == 0.1
    assert 0 < meta["train"]["codes_used"] <= 1
    vqgan = VQGAN(config)
    vqgan.load_state_dict(state)  # the v1 layout: nothing of the FSQ module is stored
    assert set(state) == set(VQGAN(config).state_dict())
    assert vqgan.encode(torch.rand(1, 3, 128, 128)).shape == (1, 16, 16)


def test_token_swaps_touch_only_the_second_half_and_copy_whole_positions_of_the_batch() -> None:
    torch.manual_seed(2)
    q = torch.randn(8, 5, 16, 16, requires_grad=True)
    out = swap_tokens(q, 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(out[:4], q[:4])
    changed = (out[4:] != q[4:]).any(1)  # (4, h, w): positions whose whole feature vector was replaced
    assert 0.15 < float(changed.float().mean()) < 0.35
    rows = q.detach().permute(0, 2, 3, 1).reshape(-1, 5)
    swapped = out[4:].detach().permute(0, 2, 3, 1)[changed]  # (k, 5)
    assert bool((swapped[:, None] == rows[None]).all(2).any(1).all())  # each is some position's vector
    out.sum().backward()  # no gradient flows through the donors
    assert q.grad is not None
    assert torch.equal(q.grad[4:].sum(1) == 0, changed)
