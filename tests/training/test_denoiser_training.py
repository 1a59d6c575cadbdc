"""The denoiser trainer's inpainting boxes, composition condition maps and data streams."""

from __future__ import annotations

import torch

from model.clip import WordTokenizer
from training import world
from training.data import SceneStream
from training.train_denoiser import half_map, region_boxes


def test_region_boxes_are_one_rectangle_of_a_quarter_to_three_quarters_a_side() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = region_boxes(512, 16, 32, g, torch.device("cpu"))
    assert boxes.shape == (512, 16, 32)
    rows, cols = boxes.any(2), boxes.any(1)
    heights, widths = rows.sum(1), cols.sum(1)
    assert int(heights.min()) >= 4 and int(heights.max()) <= 12
    assert int(widths.min()) >= 8 and int(widths.max()) <= 24
    # a rectangle: every cell of its row span x column span, nothing else
    assert torch.equal(boxes, rows[:, :, None] & cols[:, None, :])
    assert int(heights.unique().numel()) == 9  # every height from 4 to 12 occurs
    assert bool(boxes[:, 0].any()) and bool(boxes[:, -1].any())  # boxes reach both edges


def test_half_maps_put_each_embedding_over_its_half() -> None:
    a, b = torch.randn(3, 8), torch.randn(3, 8)
    wide = half_map(a, b, (16, 32), wide=True)
    assert wide.shape == (3, 8, 16, 32)
    assert torch.equal(wide[:, :, 5, 3], a) and torch.equal(wide[:, :, 15, 16], b)
    tall = half_map(a, b, (32, 16), wide=False)
    assert tall.shape == (3, 8, 32, 16)
    assert torch.equal(tall[:, :, 15, 0], a) and torch.equal(tall[:, :, 16, 15], b)


def test_scene_streams_pair_backgrounds_and_mix_binding_negatives() -> None:
    tokenizer = WordTokenizer(world.vocabulary(), 24)
    pairs = next(iter(SceneStream(64, tokenizer, seed=0, shared_background=True)))
    first, second = pairs.scenes.background.chunk(2)
    assert torch.equal(first, second)
    batch = next(iter(SceneStream(512, tokenizer, seed=0, hard_negatives=True, p_two=1.0)))
    s = batch.scenes
    exchanged = torch.zeros(256, dtype=torch.bool)
    for name in ("color", "shape", "size"):
        base, negative = getattr(s, name)[:256], getattr(s, name)[256:]
        exchanged |= (base != negative).all(1) & (negative == base.flip(1)).all(1)
    assert 0.3 < float(exchanged.float().mean()) < 0.5  # about half the negatives exchange an attribute
