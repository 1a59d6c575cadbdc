"""The model card's results table: each check beside its target, and whether it is met."""

from __future__ import annotations

import copy
from typing import Any

from training.pack import results_table

ATTRS = ("background", "color", "shape", "size", "position")


def split(value: float, n: int) -> dict[str, Any]:
    return {a: value for a in ATTRS} | {"all": value, "n": n}


def report() -> dict[str, Any]:
    """An eval report that meets every target."""
    spread = {"median": 0.0, "p90": 2.0, "max": 9, "n": 260}
    return {
        "seed": 0,
        "sampler": {"steps": 8, "guidance_scale": 1.5, "typical_filtering": True, "typical_mass": 0.5,
                    "temp_range": [1.0, 1.0]},
        "generation": {"seen": split(0.99, 160), "held_out": split(0.97, 100), "artefact_pixels": spread},
        "two_objects": {"both_right": 0.93, "each_object_right": 0.96, "exactly_two_objects": 0.99, "n": 100},
        "compositions": {"region_right": 0.95, "regions": 200, "n": 100},
        "inpainting": {"new_object": split(0.9, 100), "unmasked_mae": 0.5},
        "inpainting_scene_caption": {"new_object": split(0.95, 100), "unmasked_mae": 0.5},
        "vqgan_psnr": {"fresh": 36.0, "codes_used": 0.55, "recon_artefact_pixels": spread},
        "outpainting": {"original_mae": 0.4, "new_area_background": 0.97},
        "variations": {"same_as_source": split(0.95, 100), "chance": {a: 0.2 for a in ATTRS}},
    }  # fmt: skip


def rows(table: str) -> dict[str, list[str]]:
    """Table rows by the start of their check's name: [result, target, met]."""
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("check", "---"):
            out[cells[0].split(" (")[0].split(":")[0]] = cells[1:]
    return out


def test_a_report_meeting_every_target_says_so_row_by_row() -> None:
    table = results_table(report())
    marks = {name: cells[2] for name, cells in rows(table).items()}
    assert marks["single objects, seen triples"] == "yes"
    assert marks["compositions, a prompt per half of 256x128"] == "yes"
    assert marks["VQGAN"] == "yes"
    assert marks["inpainting asked with the new object's caption"] == ""  # reported, no target
    assert "Every target is met on these prompts." in table
    assert "guidance 1.5, typical filtering mass 0.5" in table and "seed 0." in table


def test_each_missed_target_is_marked_and_named_under_the_table() -> None:
    r = copy.deepcopy(report())
    r["generation"]["held_out"]["shape"] = 0.94  # one attribute under 95% is enough
    r["compositions"]["region_right"] = 0.895
    r["generation"]["artefact_pixels"]["p90"] = 5.0
    table = results_table(r)
    marks = {name: cells[2] for name, cells in rows(table).items()}
    assert marks["single objects, held-out triples"] == "**no**"
    assert marks["compositions, a prompt per half of 256x128"] == "**no**"
    assert marks["artefact pixels per single-object picture, median / 90th percentile / max"] == "**no**"
    assert (
        marks["single objects, seen triples"] == "yes"
        and marks["two-object captions, both objects right in every attribute"] == "yes"
    )
    below = next(line for line in table.splitlines() if line.startswith("Below target:"))
    assert (
        "single objects, held-out triples" in below and "compositions, a prompt per half of 256x128" in below
    )
    assert "artefact pixels per single-object picture" in below and "two-object" not in below
