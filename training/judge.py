"""The judge of `docs/shapes-world.md`: reads the background and the objects of a picture."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.world import COLOR_NAMES, COLORS, POSITIONS, SHAPES, SIZE_NAMES, SIZES

_PALETTE = np.array([rgb for _, rgb in COLORS], dtype=np.float64)  # (9, 3)
_CENTRES = np.array([c for _, c in POSITIONS], dtype=np.float64)  # (5, 2)
# Half the smallest distance between two palette colours (orange-yellow, about 81).
FAR = 0.5 * min(
    float(np.linalg.norm(_PALETTE[i] - _PALETTE[j])) for i in range(len(COLORS)) for j in range(i)
)
# Fill ratio of the bounding box: triangle about 0.5, circle about 0.79, square 1.0.
_FILL_THRESHOLDS = (0.645, 0.895)
_SIZE_THRESHOLD = (SIZES[0][1] + SIZES[1][1]) / 2
# A small triangle covers about 390 pixels: regions below this are specks, not objects.
MIN_OBJECT_PIXELS = 100


@dataclass(frozen=True)
class Judgement:
    """What the judge reads: palette, shape, size and position indices (None: no object found)."""

    background: int
    color: int | None
    shape: int | None
    size: int | None
    position: int | None

    def names(self) -> dict[str, str | None]:
        def name(table: tuple[str, ...], i: int | None) -> str | None:
            return None if i is None else table[i]

        return {
            "background": COLOR_NAMES[self.background],
            "color": name(COLOR_NAMES, self.color),
            "shape": name(SHAPES, self.shape),
            "size": name(SIZE_NAMES, self.size),
            "position": name(tuple(n for n, _ in POSITIONS), self.position),
        }


def nearest_color(rgb: np.ndarray) -> int:
    """Index of the palette colour nearest to `rgb` (3,)."""
    return int(np.argmin(((_PALETTE - rgb) ** 2).sum(1)))


def components(mask: np.ndarray) -> list[np.ndarray]:
    """Every 4-connected region of a bool mask (H, W), largest first, by union-find over row runs."""
    runs: list[tuple[int, int, int]] = []  # (row, start, stop)
    row_runs: list[list[int]] = []
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    for y in range(mask.shape[0]):
        starts, stops = np.flatnonzero(edges[y] == 1), np.flatnonzero(edges[y] == -1)
        row_runs.append(list(range(len(runs), len(runs) + len(starts))))
        runs += [(y, int(a), int(b)) for a, b in zip(starts, stops, strict=True)]
    parent = list(range(len(runs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for y in range(1, mask.shape[0]):
        for i in row_runs[y]:
            for j in row_runs[y - 1]:
                if runs[j][1] < runs[i][2] and runs[i][1] < runs[j][2]:
                    parent[find(i)] = find(j)
    regions: dict[int, np.ndarray] = {}
    for i, (y, a, b) in enumerate(runs):
        region = regions.setdefault(find(i), np.zeros_like(mask, dtype=bool))
        region[y, a:b] = True
    return sorted(regions.values(), key=lambda r: -int(r.sum()))


def largest_component(mask: np.ndarray) -> np.ndarray | None:
    """The largest 4-connected region of a bool mask (H, W); None when it is empty."""
    found = components(mask)
    return found[0] if found else None


def judge(image: np.ndarray) -> Judgement:
    """Judge a uint8 (H, W, 3) picture of a single-object caption, as docs/shapes-world.md says."""
    pixels = np.asarray(image, dtype=np.float64)[..., :3]
    background = _background(pixels)
    region = largest_component(np.linalg.norm(pixels - _PALETTE[background], axis=-1) > FAR)
    if region is None:
        return Judgement(background, None, None, None, None)
    return _read(pixels, background, region)


def judge_objects(image: np.ndarray) -> tuple[int, list[Judgement]]:
    """The background and every object of a picture, largest first: each region far from the background
    of at least `MIN_OBJECT_PIXELS`, read as `judge` reads its one object."""
    pixels = np.asarray(image, dtype=np.float64)[..., :3]
    background = _background(pixels)
    regions = components(np.linalg.norm(pixels - _PALETTE[background], axis=-1) > FAR)
    return background, [_read(pixels, background, r) for r in regions if r.sum() >= MIN_OBJECT_PIXELS]


def _background(pixels: np.ndarray) -> int:
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    return nearest_color(np.median(border, axis=0))


def _read(pixels: np.ndarray, background: int, region: np.ndarray) -> Judgement:
    color = nearest_color(np.median(pixels[region], axis=0))
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    width, height = x1 - x0, y1 - y0
    fill = region.sum() / float(width * height)
    shape = 2 if fill < _FILL_THRESHOLDS[0] else 0 if fill < _FILL_THRESHOLDS[1] else 1
    size = int(width * 128 / pixels.shape[1] >= _SIZE_THRESHOLD)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) * 128 / np.array([pixels.shape[1], pixels.shape[0]])
    position = int(np.argmin(((_CENTRES - centre) ** 2).sum(1)))
    return Judgement(background, color, shape, size, position)
