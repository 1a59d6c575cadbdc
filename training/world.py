"""The shapes world of `docs/shapes-world.md`: scenes, captions and batched GPU rendering."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

COLORS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 40, 40)),
    ("orange", (245, 140, 30)),
    ("yellow", (240, 220, 40)),
    ("green", (40, 170, 60)),
    ("blue", (40, 80, 220)),
    ("purple", (140, 60, 180)),
    ("white", (245, 245, 245)),
    ("black", (20, 20, 20)),
    ("gray", (128, 128, 128)),
)
COLOR_NAMES = tuple(name for name, _ in COLORS)
SHAPES = ("circle", "square", "triangle")
SIZES: tuple[tuple[str, int], ...] = (("small", 28), ("large", 52))
SIZE_NAMES = tuple(name for name, _ in SIZES)
POSITIONS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("top left", (32, 32)),
    ("top right", (96, 32)),
    ("bottom left", (32, 96)),
    ("bottom right", (96, 96)),
    ("center", (64, 64)),
)
POSITION_NAMES = tuple(name for name, _ in POSITIONS)
IMAGE_SIZE = 128
MAX_OBJECTS = 2
ATTRIBUTES = ("background", "color", "shape", "size", "position")


def is_held_out(color: int, shape: int, position: int) -> bool:
    """Whether a (color, shape, position) triple is reserved for evaluation (the spec's rule)."""
    return (color * 3 + shape * 5 + position) % 7 == 0


def held_out_mask(color: torch.Tensor, shape: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """`is_held_out` elementwise on index tensors."""
    return (color * 3 + shape * 5 + position) % 7 == 0


HELD_OUT_TRIPLES = tuple(
    (c, s, p)
    for c in range(len(COLORS))
    for s in range(len(SHAPES))
    for p in range(len(POSITIONS))
    if is_held_out(c, s, p)
)


@dataclass(frozen=True)
class Scenes:
    """A batch of scenes as index tensors; object slot 1 is drawn over slot 0."""

    background: torch.Tensor  # (B,) long
    color: torch.Tensor  # (B, 2) long
    shape: torch.Tensor  # (B, 2) long
    size: torch.Tensor  # (B, 2) long
    position: torch.Tensor  # (B, 2) long
    present: torch.Tensor  # (B, 2) bool; slot 0 is always present

    def __len__(self) -> int:
        return int(self.background.shape[0])

    @property
    def device(self) -> torch.device:
        return self.background.device

    def where(self, rows: torch.Tensor, other: Scenes) -> Scenes:
        """Take `other`'s scene in the rows where `rows` (B,) is true."""
        return Scenes(
            **{
                f.name: torch.where(
                    rows.view(-1, *[1] * (getattr(self, f.name).dim() - 1)),
                    getattr(other, f.name),
                    getattr(self, f.name),
                )
                for f in dataclasses.fields(self)
            }
        )

    def cat(self, other: Scenes) -> Scenes:
        return Scenes(
            **{
                f.name: torch.cat([getattr(self, f.name), getattr(other, f.name)])
                for f in dataclasses.fields(self)
            }
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Scenes:
        return _map_tensors(self, lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Scenes:
        return _map_tensors(self, torch.Tensor.pin_memory)

    def valid(self, allow_held_out: bool) -> torch.Tensor:
        """(B,) bool: object colours differ from the background, positions differ, held-out rule."""
        ok = ((self.color != self.background[:, None]) | ~self.present).all(1)
        ok &= ~(self.present.all(1) & (self.position[:, 0] == self.position[:, 1]))
        if not allow_held_out:
            held = held_out_mask(self.color, self.shape, self.position) & self.present
            ok &= ~held.any(1)
        return ok


T = TypeVar("T", "Scenes", "Captions")


def _map_tensors(obj: T, fn: Callable[[torch.Tensor], torch.Tensor]) -> T:
    """A copy of a tensor dataclass with `fn` applied to every tensor field (recursively)."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        changes[f.name] = fn(value) if isinstance(value, torch.Tensor) else _map_tensors(value, fn)
    return dataclasses.replace(obj, **changes)


def _uniform_scenes(
    present: torch.Tensor, generator: torch.Generator, background: torch.Tensor | None = None
) -> Scenes:
    n, device = present.shape[0], present.device

    def draw(high: int, *shape: int) -> torch.Tensor:
        return torch.randint(high, shape, generator=generator, device=device)

    return Scenes(
        background=draw(len(COLORS), n) if background is None else background,
        color=draw(len(COLORS), n, MAX_OBJECTS),
        shape=draw(len(SHAPES), n, MAX_OBJECTS),
        size=draw(len(SIZES), n, MAX_OBJECTS),
        position=draw(len(POSITIONS), n, MAX_OBJECTS),
        present=present,
    )


def sample_scenes(
    n: int,
    generator: torch.Generator,
    *,
    p_two: float = 0.5,
    allow_held_out: bool = False,
    device: torch.device | str = "cpu",
    background: torch.Tensor | None = None,
) -> Scenes:
    """Draw `n` valid scenes uniformly (rejection sampling, vectorised); training excludes held-out.

    `background` (n,) fixes each scene's background colour (the halves of a composition share one).
    """
    present = torch.ones(n, MAX_OBJECTS, dtype=torch.bool, device=device)
    present[:, 1] = torch.rand(n, generator=generator, device=device) < p_two
    scenes = _uniform_scenes(present, generator, background)
    while True:
        bad = ~scenes.valid(allow_held_out)
        if not bool(bad.any()):
            return scenes
        scenes = scenes.where(bad, _uniform_scenes(present, generator, background))


def swap_bindings(scenes: Scenes, generator: torch.Generator, *, allow_held_out: bool = False) -> Scenes:
    """Copies of two-object scenes with the colour, the shape or the size of the two objects exchanged:
    the same words in the caption, bound the other way round (hard negatives that teach binding).

    Rows where the exchange changes nothing (one object, equal attributes) or breaks the rules (a
    held-out triple) come back unchanged; compare with the input to find them.
    """
    n, device = len(scenes), scenes.device
    names = ("color", "shape", "size")
    differ = torch.stack([getattr(scenes, name)[:, 0] != getattr(scenes, name)[:, 1] for name in names], 1)
    score = torch.rand(n, len(names), generator=generator, device=device) - 2.0 * ~differ
    which = score.argmax(1)  # a random attribute among those the two objects differ in
    fields = {}
    for k, name in enumerate(names):
        value = getattr(scenes, name)
        swap = (which == k)[:, None] & scenes.present.all(1, keepdim=True)
        fields[name] = torch.where(swap, value.flip(1), value)
    swapped = Scenes(scenes.background, position=scenes.position, present=scenes.present, **fields)
    return scenes.where(swapped.valid(allow_held_out), swapped)


def perturb_scenes(scenes: Scenes, generator: torch.Generator, *, allow_held_out: bool = False) -> Scenes:
    """Copies that differ from `scenes` in exactly one attribute (hard negatives for contrastive training)."""
    n, device = len(scenes), scenes.device
    out = scenes
    todo = torch.ones(n, dtype=torch.bool, device=device)
    for _ in range(32):
        fresh = _uniform_scenes(scenes.present, generator)
        which = torch.randint(len(ATTRIBUTES), (n,), generator=generator, device=device)
        slot = torch.randint(MAX_OBJECTS, (n,), generator=generator, device=device)
        slot = torch.where(scenes.present[:, 1], slot, torch.zeros_like(slot))
        hit = torch.nn.functional.one_hot(slot, MAX_OBJECTS).bool()  # (B, 2)
        fields = {"background": torch.where(which == 0, fresh.background, scenes.background)}
        for k, name in enumerate(ATTRIBUTES[1:], start=1):
            change = hit & (which == k)[:, None]
            fields[name] = torch.where(change, getattr(fresh, name), getattr(scenes, name))
        candidate = Scenes(present=scenes.present, **fields)
        changed = torch.zeros(n, dtype=torch.bool, device=device)
        for f in dataclasses.fields(Scenes):
            a, b = getattr(candidate, f.name), getattr(scenes, f.name)
            changed |= (a != b).view(n, -1).any(1)
        accept = todo & changed & candidate.valid(allow_held_out)
        out = out.where(accept, candidate)
        todo &= ~accept
        if not bool(todo.any()):
            return out
    return out.where(todo, sample_scenes(n, generator, allow_held_out=allow_held_out, device=device))


def single_object_scenes(
    background: torch.Tensor,
    color: torch.Tensor,
    shape: torch.Tensor,
    size: torch.Tensor,
    position: torch.Tensor,
) -> Scenes:
    """Scenes of one object each from (B,) index tensors."""

    def two(t: torch.Tensor) -> torch.Tensor:
        return torch.stack([t, torch.zeros_like(t)], 1)

    present = torch.zeros(len(background), MAX_OBJECTS, dtype=torch.bool, device=background.device)
    present[:, 0] = True
    return Scenes(background, two(color), two(shape), two(size), two(position), present)


def palette(device: torch.device | str = "cpu") -> torch.Tensor:
    """(9, 3) float palette in [0, 1]."""
    return torch.tensor([rgb for _, rgb in COLORS], dtype=torch.float32, device=device) / 255.0


def object_masks(scenes: Scenes, size: int = IMAGE_SIZE) -> torch.Tensor:
    """(B, 2, size, size) bool masks of each object slot, from pixel-centre coordinate grids."""
    device = scenes.device
    coords = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    scale = size / IMAGE_SIZE
    centres = torch.tensor([c for _, c in POSITIONS], dtype=torch.float32, device=device) * scale
    halves = torch.tensor([s for _, s in SIZES], dtype=torch.float32, device=device) * scale / 2
    cx = centres[scenes.position, 0][..., None, None]  # (B, 2, 1, 1)
    cy = centres[scenes.position, 1][..., None, None]
    half = halves[scenes.size][..., None, None]
    dx = coords.view(1, 1, 1, size) - cx  # (B, 2, 1, W)
    dy = coords.view(1, 1, size, 1) - cy  # (B, 2, H, 1)
    in_box = (dx.abs() <= half) & (dy.abs() <= half)
    circle = dx**2 + dy**2 <= half**2
    # apex (2 px wide) at the top centre, base (full width) on the bottom row
    triangle = in_box & (2 * dx.abs() <= dy + half + 0.5 * scale)
    shape = scenes.shape[..., None, None]
    mask = torch.where(shape == 0, circle, torch.where(shape == 1, in_box, triangle))
    return mask & scenes.present[..., None, None]


def render(scenes: Scenes, size: int = IMAGE_SIZE) -> torch.Tensor:
    """(B, 3, size, size) float pictures in [0, 1] with exact palette colours, on the scenes' device."""
    colors = palette(scenes.device)
    masks = object_masks(scenes, size)
    image = colors[scenes.background][:, :, None, None].expand(-1, -1, size, size)
    for k in range(MAX_OBJECTS):
        image = torch.where(masks[:, k, None], colors[scenes.color[:, k]][:, :, None, None], image)
    return image.contiguous()


@dataclass(frozen=True)
class Captions:
    """Which words a caption keeps for each scene: word dropout leaves attributes out ("any")."""

    scenes: Scenes
    keep_object: torch.Tensor  # (B, 2) bool, a clause per kept present object
    keep_size: torch.Tensor  # (B, 2) bool
    keep_color: torch.Tensor  # (B, 2) bool
    keep_position: torch.Tensor  # (B, 2) bool
    keep_background: torch.Tensor  # (B,) bool

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Captions:
        return _map_tensors(self, lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Captions:
        return _map_tensors(self, torch.Tensor.pin_memory)

    def texts(self) -> list[str]:
        """The caption strings of the grammar, with the dropped words left out."""
        s = self.scenes
        cols = {
            name: getattr(self, name).tolist()
            for name in ("keep_object", "keep_size", "keep_color", "keep_position", "keep_background")
        }
        idx = {name: getattr(s, name).tolist() for name in ("background", *ATTRIBUTES[1:])}
        out = []
        for i in range(len(s)):
            clauses = []
            for k in range(MAX_OBJECTS):
                if not cols["keep_object"][i][k]:
                    continue
                words = ["a"]
                if cols["keep_size"][i][k]:
                    words.append(SIZE_NAMES[idx["size"][i][k]])
                if cols["keep_color"][i][k]:
                    words.append(COLOR_NAMES[idx["color"][i][k]])
                words.append(SHAPES[idx["shape"][i][k]])
                if cols["keep_position"][i][k]:
                    words += ["in", "the", POSITION_NAMES[idx["position"][i][k]]]
                clauses.append(" ".join(words))
            text = " and ".join(clauses)
            if cols["keep_background"][i]:
                background = f"a {COLOR_NAMES[idx['background'][i]]} background"
                text = f"{text} on {background}" if text else background
            out.append(text)
        return out

    def matches(self, scenes: Scenes) -> torch.Tensor:
        """(B_captions, B_scenes) bool: the caption is true of the scene (every kept word holds)."""
        s = self.scenes
        ok = ~self.keep_background[:, None] | (s.background[:, None] == scenes.background[None, :])
        for k in range(MAX_OBJECTS):
            clause = s.present[:, k] & self.keep_object[:, k]
            found = torch.zeros_like(ok)
            for j in range(MAX_OBJECTS):
                hit = scenes.present[None, :, j] & (s.shape[:, None, k] == scenes.shape[None, :, j])
                for name, keep in (
                    ("size", self.keep_size),
                    ("color", self.keep_color),
                    ("position", self.keep_position),
                ):
                    same = getattr(s, name)[:, None, k] == getattr(scenes, name)[None, :, j]
                    hit &= ~keep[:, None, k] | same
                found |= hit
            ok &= ~clause[:, None] | found
        return ok


def full_captions(scenes: Scenes) -> Captions:
    """Captions that keep every word (the evaluation grammar)."""
    on = torch.ones_like(scenes.present)
    return Captions(scenes, scenes.present, on, on, on, torch.ones_like(scenes.background, dtype=torch.bool))


def dropout_captions(scenes: Scenes, generator: torch.Generator, *, p_drop: float = 0.3) -> Captions:
    """Training captions: each attribute word group is left out with probability `p_drop`.

    A whole object clause is left out rarely (5%), so a full one-object caption keeps meaning
    "exactly this object"; the caption is never empty.
    """
    n, device = len(scenes), scenes.device

    def keep(p: float, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=device) >= p

    keep_object = scenes.present & keep(0.05, n, MAX_OBJECTS)
    keep_background = keep(p_drop, n) | ~keep_object.any(1)
    return Captions(
        scenes,
        keep_object,
        keep(p_drop, n, MAX_OBJECTS),
        keep(p_drop, n, MAX_OBJECTS),
        keep(p_drop, n, MAX_OBJECTS),
        keep_background,
    )


def vocabulary() -> list[str]:
    """Every word the caption grammar can produce, in a fixed order."""
    words = ["a", "in", "the", "and", "on", "background"]
    for name in (*SIZE_NAMES, *COLOR_NAMES, *SHAPES, *POSITION_NAMES):
        for w in name.split():
            if w not in words:
                words.append(w)
    return words


@dataclass(frozen=True)
class EvalPrompts:
    """A fixed set of single-object scenes, split into seen and held-out triples."""

    scenes: Scenes
    held_out: torch.Tensor  # (B,) bool
    prompts: list[str]
    seeds: list[int]


def eval_prompts(n_seen: int, n_held_out: int, seed: int = 0) -> EvalPrompts:
    """Deterministic evaluation prompts: `n_held_out` cycle through every held-out triple."""
    g = torch.Generator().manual_seed(seed)
    seen = sample_scenes(n_seen, g, p_two=0.0)
    triples = torch.tensor(HELD_OUT_TRIPLES)[torch.arange(n_held_out) % len(HELD_OUT_TRIPLES)]
    color, shape, position = triples.unbind(1)
    background = (color + 1 + torch.randint(len(COLORS) - 1, (n_held_out,), generator=g)) % len(COLORS)
    size = torch.randint(len(SIZES), (n_held_out,), generator=g)
    held = single_object_scenes(background, color, shape, size, position)
    scenes = seen.cat(held)
    flags = torch.cat([torch.zeros(n_seen, dtype=torch.bool), torch.ones(n_held_out, dtype=torch.bool)])
    seeds = torch.randint(2**31 - 1, (len(scenes),), generator=g).tolist()
    return EvalPrompts(scenes, flags, full_captions(scenes).texts(), seeds)
