"""The judge reads every clean single-object render correctly, and both objects of clean two-object
renders; the evaluation's artefact count is zero on clean renders."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from training import world
from training.eval import artefacts, corner_pairs
from training.judge import components, judge, judge_objects, largest_component


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


def test_both_objects_of_clean_two_object_renders_are_read() -> None:
    scenes = corner_pairs(300, torch.Generator().manual_seed(0))
    images = (world.render(scenes) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    wrong = []
    for k, image in enumerate(images):
        background, found = judge_objects(image)
        fields = ("color", "shape", "size", "position")
        asked = {tuple(int(getattr(scenes, a)[k, i]) for a in fields) for i in (0, 1)}
        read = {(j.color, j.shape, j.size, j.position) for j in found}
        if background != int(scenes.background[k]) or read != asked:
            wrong.append((k, asked, read))
    assert wrong == []


def test_specks_are_not_objects_but_count_as_artefacts() -> None:
    scenes = world.single_object_scenes(*torch.tensor([[4, 0, 0, 1, 4]]).unbind(1))  # a large red circle
    image = (world.render(scenes)[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy().copy()
    clean = judge(image)
    assert artefacts(image, clean) == 0
    image[5:8, 5:8] = (245, 245, 245)  # a white 3x3 speck in a corner: off the blue-to-red line
    background, found = judge_objects(image)
    assert background == 4 and [(j.color, j.shape) for j in found] == [(0, 0)]
    assert artefacts(image, judge(image)) == 9


def test_components_come_largest_first() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[0, 0] = True
    mask[4:8, 4:8] = True
    mask[0:2, 5:7] = True
    assert [int(c.sum()) for c in components(mask)] == [16, 4, 1]
    assert components(np.zeros((3, 3), dtype=bool)) == []
