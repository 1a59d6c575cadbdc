"""Draw docs/samples.png: every operation of the shipped paella-mini, one row each, on the CPU in under a
minute: `.venv/bin/python docs/samples.py` (same seeds, same picture)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model.ops import (
    Composition,
    Draw,
    Generate,
    Inpaint,
    Interpolation,
    Mask,
    Operation,
    Outpaint,
    Picture,
    Region,
    StructuralEdit,
    Variation,
)
from model.pipeline import Pipeline

REPO = Path(__file__).resolve().parent.parent
TILE, GAP, LABEL = 128, 8, 230
INK, PAPER, INPUT = (232, 233, 236), (20, 22, 26), (255, 176, 45)
SOURCE = "a large red circle in the top left on a blue background"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", type=Path, default=REPO / "weights" / "paella-mini")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "samples.png")
    args = parser.parse_args()
    pipe = Pipeline.from_folder(args.weights)

    def draw(ops: list[Operation], seed: int = 5) -> list[Image.Image]:
        return pipe.images([Draw(op, seed + i, pipe.config.sampler, i) for i, op in enumerate(ops)])

    source = draw([Generate(SOURCE, 128, 128)], seed=3)[0]
    picture = Picture.from_array(np.asarray(source))
    hole = np.zeros((128, 128), dtype=bool)
    hole[:, 64:] = True
    left = Region("a large yellow square in the top left on a white background", (0.0, 0.0, 0.5, 1.0))
    right = Region("a large green triangle in the bottom right on a white background", (0.5, 0.0, 1.0, 1.0))
    end = "a large blue square in the bottom right on a white background"
    rows: list[tuple[str, list[Image.Image], list[Image.Image]]] = [
        (
            "generate\nfour prompts",
            [],
            draw(
                [
                    Generate(SOURCE, 128, 128),
                    Generate("a small green triangle in the center on a white background", 128, 128),
                    Generate("a large purple square in the bottom left on a yellow background", 128, 128),
                    Generate("a red circle above a blue square on a black background", 128, 128),
                ]
            ),
        ),
        (
            "inpaint the right half\n'a large yellow triangle in\nthe top right on a blue\nbackground'",
            [source, masked(source, hole)],
            draw(
                [
                    Inpaint(
                        picture,
                        Mask.from_array(hole),
                        "a large yellow triangle in the top right on a blue background",
                    )
                ]
                * 3
            ),
        ),
        (
            "outpaint 64 px right,\n32 px down",
            [source],
            draw([Outpaint(picture, "a blue background", right=64, down=32)] * 2),
        ),
        ("variations", [source], draw([Variation(picture, 128, 128)] * 4)),
        (
            "structural edit\n'... green circle ...'\nstrength 0.3, 0.6, 0.9",
            [source],
            draw(
                [
                    StructuralEdit(picture, "a large green circle in the top left on a blue background", s)
                    for s in (0.3, 0.6, 0.9)
                ]
            ),
        ),
        (
            "compose: two boxes,\n'a large yellow square in\nthe top left ...' and\n"
            "'a large green triangle in\nthe bottom right ...'",
            [boxes([left, right])],
            draw([Composition((left, right), 128, 128)] * 3),
        ),
        (
            "interpolate, one seed:\nred circle -> blue square",
            [],
            pipe.images(
                [Draw(Interpolation(SOURCE, end, 6, 128, 128), 9, pipe.config.sampler, i) for i in range(6)]
            ),
        ),
    ]
    sheet(rows).save(args.out, optimize=True)
    print(f"wrote {args.out}")


def masked(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """The picture with its repainted part shaded, as the playground shows a painted mask."""
    shade = np.asarray(image).copy()
    shade[mask] = (shade[mask] * 0.45 + np.array([255, 45, 111]) * 0.55).astype(np.uint8)
    return Image.fromarray(shade)


def boxes(regions: list[Region]) -> Image.Image:
    """The regions' boxes, as the playground draws them."""
    out = Image.new("RGB", (TILE, TILE), (13, 14, 17))
    ink = ImageDraw.Draw(out)
    for region, colour in zip(regions, ((255, 45, 111), (45, 156, 255)), strict=False):
        assert region.box is not None
        left, top, right, bottom = (round(v * (TILE - 1)) for v in region.box)
        ink.rectangle((left + 2, top + 2, right - 2, bottom - 2), outline=colour, width=2)
    return out


def sheet(rows: list[tuple[str, list[Image.Image], list[Image.Image]]]) -> Image.Image:
    """One row per operation: its label, its inputs framed, then its outputs."""
    width = LABEL + max(sum(im.width + GAP for im in (*i, *o)) + (GAP * 2 if i else 0) for _, i, o in rows)
    height = sum(max(im.height for im in (*i, *o)) + 2 * GAP for _, i, o in rows) + GAP
    out = Image.new("RGB", (width, height), PAPER)
    ink = ImageDraw.Draw(out)
    font = ImageFont.load_default(15)
    y = GAP
    for label, inputs, outputs in rows:
        ink.multiline_text((GAP, y + 4), label, fill=INK, font=font, spacing=4)
        x = LABEL
        for im in inputs:
            out.paste(im, (x, y))
            ink.rectangle((x - 2, y - 2, x + im.width + 1, y + im.height + 1), outline=INPUT, width=2)
            x += im.width + GAP
        x += GAP * 2 if inputs else 0
        for im in outputs:
            out.paste(im, (x, y))
            x += im.width + GAP
        y += max(im.height for im in (*inputs, *outputs)) + 2 * GAP
    return out


if __name__ == "__main__":
    main()
