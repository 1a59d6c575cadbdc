"""Latency against images/s, one line per path and a point per batch size, from a pipeline_gpu.py JSON.

PYTHONPATH=. python benchmarks/plot.py benchmarks/results/pipeline_gpu_NVIDIA_H200.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

W, H, LEFT, BOTTOM, TOP, RIGHT = 900, 560, 80, 60, 40, 30
COLOURS = {"fast": (30, 110, 220), "reference": (200, 60, 40)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path)
    parser.add_argument("--out", type=Path, help="default: the JSON's name with .png")
    args = parser.parse_args()
    result = json.loads(args.result.read_text())
    paths = {name: result[name] for name in COLOURS if name in result}
    points = [(r["images_per_s"], r["latency_ms"]) for rows in paths.values() for r in rows]
    x_max = max(x for x, _ in points) * 1.1
    y_lo, y_hi = (
        math.floor(math.log10(min(y for _, y in points))),
        math.ceil(math.log10(max(y for _, y in points))),
    )

    def at(x: float, y: float) -> tuple[float, float]:
        fx = x / x_max
        fy = (math.log10(y) - y_lo) / (y_hi - y_lo)
        return LEFT + fx * (W - LEFT - RIGHT), H - BOTTOM - fy * (H - BOTTOM - TOP)

    image = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(image)
    draw.line([(LEFT, TOP), (LEFT, H - BOTTOM), (W - RIGHT, H - BOTTOM)], fill="black", width=2)
    for decade in range(y_lo, y_hi + 1):
        for mantissa in (1, 2, 5):
            y = mantissa * 10**decade
            if 10**y_lo <= y <= 10**y_hi:
                _, py = at(1, y)
                draw.line([(LEFT - 5, py), (W - RIGHT, py)], fill=(225, 225, 225))
                draw.text((8, py - 6), f"{y:g} ms", fill="black")
    step = 20 if x_max > 100 else 5
    for x in range(0, int(x_max) + 1, step):
        px, _ = at(x, 10**y_lo)
        draw.line([(px, H - BOTTOM), (px, H - BOTTOM + 5)], fill="black")
        draw.text((px - 8, H - BOTTOM + 10), str(x), fill="black")
    draw.text((W // 2 - 40, H - 25), "images per second", fill="black")
    for name, rows in paths.items():
        line = [at(r["images_per_s"], r["latency_ms"]) for r in rows]
        draw.line(line, fill=COLOURS[name], width=3)
        for (px, py), r in zip(line, rows, strict=True):
            draw.ellipse((px - 4, py - 4, px + 4, py + 4), fill=COLOURS[name])
            draw.text((px + 6, py - 14), f"b={r['batch']}", fill=COLOURS[name])
    title = f"{result['card']}, torch {result['torch']}: {result['preset']}"
    draw.text((LEFT, 12), title, fill="black")
    for i, name in enumerate(paths):
        draw.text((W - 230, TOP + 10 + 16 * i), f"{name} (latency of one call)", fill=COLOURS[name])
    out = args.out or args.result.with_suffix(".png")
    image.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
