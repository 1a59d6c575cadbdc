"""The judge reads every clean single-object render correctly."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from training import world
from training.judge import judge, largest_component


def test_judge_is_right_on_every_clean_single_object_scene() -> None:
    combos = [
        (bg, c, s, z, p)
        for bg, c, s, z, p in itertools.product(range(9), range(9), range(3), range(2), range(5))
        if c != bg
    ]
    assert len(combos) == 9 * 8 * 3 * 5 * 2
    scenes = world.single_object_scenes(*torch.tensor(combos).unbind(1))
    images = (world.render(scenes) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    wrong = []
    for combo, image in zip(combos, images, strict=True):
        j = judge(image)
        if (j.background, j.color, j.shape, j.size, j.position) != combo:
            wrong.append((combo, j))
    assert wrong == []


def test_judge_reports_no_object_on_a_blank_picture() -> None:
    blank = np.full((128, 128, 3), (40, 80, 220), dtype=np.uint8)
    j = judge(blank)
    assert j.background == 4 and j.color is None and j.shape is None


def test_largest_component_is_four_connected() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[0, 0:3] = True  # 3 px
    mask[1, 3] = True  # touches only diagonally
    mask[3:6, 3:6] = True  # 9 px, largest
    out = largest_component(mask)
    assert out is not None and out.sum() == 9 and out[4, 4] and not out[0, 0]
    u = np.zeros((5, 5), dtype=bool)
    u[0:4, 0] = u[0:4, 4] = u[4, :] = True  # a U joins two columns through the bottom row
    joined = largest_component(u)
    assert joined is not None and joined.sum() == u.sum()
    assert largest_component(np.zeros((4, 4), dtype=bool)) is None
