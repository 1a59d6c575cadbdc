"""Measure a weight folder on the shapes world: judged generation accuracy, VQGAN PSNR, image operations.

Every check is seeded, so two runs on the same weights give the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.config import SamplerConfig
from model.ops import (
    Composition,
    Draw,
    Generate,
    Inpaint,
    Mask,
    Operation,
    Outpaint,
    Picture,
    Region,
    Variation,
)
from model.pipeline import Pipeline
from training import world
from training.judge import FAR, Judgement, judge, judge_objects, nearest_color
from training.train_vqgan import reconstruction_psnr

ATTRS = ("background", "color", "shape", "size", "position")
QUADRANT = 64  # inpainting repaints the 64 x 64 px quadrant of a corner position
ARTEFACT = 50.0  # RGB units off the background-to-object line that make a pixel an artefact
CENTER = 4  # the index of the position "center"


def to_arrays(images: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) floats in [0, 1] to uint8 (H, W, 3) arrays."""
    return list((images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())


def truth(scenes: world.Scenes, slot: int = 0) -> list[tuple[int, int, int, int, int]]:
    """(background, color, shape, size, position) of one object slot of every scene."""
    cols = [scenes.background] + [getattr(scenes, a)[:, slot] for a in ATTRS[1:]]
    return [tuple(row) for row in torch.stack(cols, 1).tolist()]


def scores(judged: Sequence[Judgement], expected: Sequence[tuple[int, ...]]) -> dict[str, float]:
    """Per-attribute accuracy and the rate of pictures with every attribute right."""
    hits = np.array(
        [[getattr(j, a) == e[k] for k, a in enumerate(ATTRS)] for j, e in zip(judged, expected, strict=True)]
    )
    out = {a: round(float(hits[:, k].mean()), 4) for k, a in enumerate(ATTRS)}
    out["all"] = round(float(hits.all(1).mean()), 4)
    out["n"] = len(judged)
    return out


def run(
    pipe: Pipeline, ops: Sequence[Operation], seeds: Sequence[int], sampler: SamplerConfig, batch: int
) -> list[np.ndarray]:
    """One picture per (operation, seed), `batch` at a time, with a progress bar on a terminal; uint8 arrays
    out."""
    draws = [Draw(op, seed, sampler) for op, seed in zip(ops, seeds, strict=True)]
    out: list[np.ndarray] = []
    name = type(ops[0]).__name__.lower() if ops else "run"
    for i in tqdm(range(0, len(draws), batch), desc=name, unit="batch", leave=False, disable=None):
        out += [np.asarray(im) for im in pipe.images(draws[i : i + batch])]
    return out


def picture(array: np.ndarray) -> Picture:
    return Picture.from_array(array)


def eval_generation(
    pipe: Pipeline, n_seen: int, n_held_out: int, sampler: SamplerConfig, batch: int, seed: int = 0
) -> dict[str, Any]:
    """Judge text-to-image pictures of single-object prompts, seen and held-out triples apart."""
    ev = world.eval_prompts(n_seen, n_held_out, seed=seed)
    images = run(pipe, [Generate(p, 128, 128) for p in ev.prompts], ev.seeds, sampler, batch)
    judged = [judge(im) for im in images]
    expected = truth(ev.scenes)
    held = ev.held_out.tolist()
    pick = lambda flag: [i for i, h in enumerate(held) if h == flag]  # noqa: E731
    report: dict[str, Any] = {
        split: scores([judged[i] for i in pick(flag)], [expected[i] for i in pick(flag)])
        for split, flag in (("seen", False), ("held_out", True))
    }
    counts = [artefacts(im, j) for im, j in zip(images, judged, strict=True)]
    report["artefact_pixels"] = spread(counts)
    return report


def spread(counts: Sequence[int]) -> dict[str, float]:
    """Median, 90th percentile, maximum and n of per-picture counts."""
    return {
        "median": float(np.median(counts)),
        "p90": float(np.percentile(counts, 90)),
        "max": int(max(counts)),
        "n": len(counts),
    }


def artefacts(image: np.ndarray, judged: Judgement) -> int:
    """Pixels further than `ARTEFACT` RGB units from the segment between the judged background colour and
    the judged object colour (a flat picture has none; the VQGAN's specks and fringes count)."""
    palette = np.array([rgb for _, rgb in world.COLORS], dtype=np.float64)
    a = palette[judged.background]
    b = palette[judged.color] if judged.color is not None else a
    pixels = np.asarray(image, dtype=np.float64).reshape(-1, 3)
    span = b - a
    t = np.clip((pixels - a) @ span / max(float(span @ span), 1e-9), 0.0, 1.0)
    distance = np.linalg.norm(pixels - (a + t[:, None] * span), axis=1)
    return int((distance > ARTEFACT).sum())


def eval_psnr(pipe: Pipeline, n: int, seed: int) -> dict[str, Any]:
    """The VQGAN alone: reconstruction PSNR (argmax codes, 8-bit output) on fresh pictures and on held-out
    objects, the share of the codebook fresh pictures use, and artefact pixels (`artefacts`) in the
    reconstructions of fresh one-object pictures (the spot a VQGAN draws shows here, before any sampling)."""
    g = torch.Generator().manual_seed(seed)
    fresh = world.render(world.sample_scenes(n, g))
    held = world.eval_prompts(0, n, seed=seed).scenes
    single = world.sample_scenes(n, g, p_two=0.0)
    with torch.inference_mode():
        codes = torch.cat([pipe.vqgan.encode(fresh[i : i + 32].to(pipe.device)) for i in range(0, n, 32)])
        images = world.render(single)
        recon = torch.cat(
            [
                pipe.vqgan.decode(pipe.vqgan.encode(chunk.to(pipe.device))).float().cpu()
                for chunk in images.split(32)
            ]
        )
        counts = [
            artefacts(a, Judgement(b, c, None, None, None))
            for a, b, c in zip(
                to_arrays(recon), single.background.tolist(), single.color[:, 0].tolist(), strict=True
            )
        ]
        return {
            "fresh": round(reconstruction_psnr(pipe.vqgan, fresh.to(pipe.device)), 2),
            "held_out_objects": round(reconstruction_psnr(pipe.vqgan, world.render(held).to(pipe.device)), 2),
            "codes_used": round(codes.unique().numel() / pipe.config.vqgan.n_embed, 4),
            "recon_artefact_pixels": spread(counts),
        }


def corner_pairs(n: int, g: torch.Generator) -> world.Scenes:
    """Two-object training scenes whose objects sit in two different corners."""
    scenes = world.sample_scenes(n, g, p_two=1.0)
    while True:
        a = torch.randint(4, (n,), generator=g)
        b = (a + 1 + torch.randint(3, (n,), generator=g)) % 4
        placed = world.Scenes(
            scenes.background, scenes.color, scenes.shape, scenes.size, torch.stack([a, b], 1), scenes.present
        )
        bad = ~placed.valid(allow_held_out=False)
        if not bool(bad.any()):
            return placed
        scenes = scenes.where(bad, world.sample_scenes(n, g, p_two=1.0))


def quadrant_mask(position: int) -> np.ndarray:
    """(128, 128) bool: the 64 x 64 quadrant holding a corner position."""
    (cx, cy) = world.POSITIONS[position][1]
    mask = np.zeros((128, 128), dtype=bool)
    x0, y0 = (cx // QUADRANT) * QUADRANT, (cy // QUADRANT) * QUADRANT
    mask[y0 : y0 + QUADRANT, x0 : x0 + QUADRANT] = True
    return mask


def eval_inpainting(
    pipe: Pipeline, n: int, sampler: SamplerConfig, batch: int, seed: int, *, prompt: str = "object"
) -> dict[str, Any]:
    """Repaint an empty corner quadrant of a one-object picture, asking for a new object there.

    `prompt` "object" asks with the new object's own caption (what to paint in the mask, on the
    picture's background); "scene" with the caption of the whole two-object picture, which also asks
    the pooled CLIP embedding to bind each colour and shape to its position. The new object is judged
    alone (pixels outside the mask set to the background); the unmasked pixels are compared with the
    input (mean absolute error in 0..255 units).
    """
    scenes = corner_pairs(n, torch.Generator().manual_seed(seed))
    source_scenes = world.single_object_scenes(
        scenes.background, scenes.color[:, 0], scenes.shape[:, 0], scenes.size[:, 0], scenes.position[:, 0]
    )
    sources = to_arrays(world.render(source_scenes))
    masks = [quadrant_mask(p) for p in scenes.position[:, 1].tolist()]
    asked = scenes
    if prompt == "object":
        asked = world.single_object_scenes(
            scenes.background,
            scenes.color[:, 1],
            scenes.shape[:, 1],
            scenes.size[:, 1],
            scenes.position[:, 1],
        )
    prompts = world.full_captions(asked).texts()
    seeds = [seed * 7919 + i for i in range(n)]
    ops = [
        Inpaint(picture(src), Mask.from_array(m), p)
        for src, m, p in zip(sources, masks, prompts, strict=True)
    ]
    outs = run(pipe, ops, seeds, sampler, batch)
    palette = np.array([rgb for _, rgb in world.COLORS], dtype=np.uint8)
    judged, errors = [], []
    for out, src, mask, bg in zip(outs, sources, masks, scenes.background.tolist(), strict=True):
        alone = np.where(mask[..., None], out, palette[bg])
        judged.append(judge(alone))
        errors.append(np.abs(out.astype(np.float64) - src)[~mask].mean())
    return {
        "new_object": scores(judged, truth(scenes, slot=1)),
        "unmasked_mae": round(float(np.mean(errors)), 3),
    }


def eval_outpainting(pipe: Pipeline, n: int, sampler: SamplerConfig, batch: int, seed: int) -> dict[str, Any]:
    """Extend one-object pictures by 64 px on the right: the original stays, the new area is background."""
    ev = world.eval_prompts(n, 0, seed=seed)
    sources = to_arrays(world.render(ev.scenes))
    ops = [Outpaint(picture(src), p, right=64) for src, p in zip(sources, ev.prompts, strict=True)]
    outs = run(pipe, ops, ev.seeds, sampler, batch)
    palette = np.array([rgb for _, rgb in world.COLORS], dtype=np.float64)
    kept, background, clean = [], [], []
    for out, src, bg in zip(outs, sources, ev.scenes.background.tolist(), strict=True):
        kept.append(np.abs(out[:, :128].astype(np.float64) - src).mean())
        new = out[:, 128:].reshape(-1, 3).astype(np.float64)
        background.append(nearest_color(np.median(new, axis=0)) == bg)
        clean.append((np.linalg.norm(new - palette[bg], axis=1) <= FAR).mean())
    return {
        "original_mae": round(float(np.mean(kept)), 3),
        "new_area_background": round(float(np.mean(background)), 4),
        "new_area_clean_pixels": round(float(np.mean(clean)), 4),
        "n": n,
    }


def eval_variations(pipe: Pipeline, n: int, sampler: SamplerConfig, batch: int, seed: int) -> dict[str, Any]:
    """Variations of one-object pictures: how often the judge reads the source's attributes back."""
    ev = world.eval_prompts(n, 0, seed=seed)
    sources = to_arrays(world.render(ev.scenes))
    outs = run(pipe, [Variation(picture(src), 128, 128) for src in sources], ev.seeds, sampler, batch)
    same = scores([judge(o) for o in outs], truth(ev.scenes))
    chance = {"background": 1 / 9, "color": 1 / 8, "shape": 1 / 3, "size": 1 / 2, "position": 1 / 5}
    return {"same_as_source": same, "chance": {k: round(v, 4) for k, v in chance.items()}}


def eval_two_objects(pipe: Pipeline, n: int, sampler: SamplerConfig, batch: int, seed: int) -> dict[str, Any]:
    """Two-object captions (objects in two different corners, seen triples): the background right, exactly
    two objects found, and at each asked position an object right in colour, shape and size."""
    scenes = corner_pairs(n, torch.Generator().manual_seed(seed))
    prompts = world.full_captions(scenes).texts()
    seeds = [seed * 7919 + i for i in range(n)]
    outs = run(pipe, [Generate(p, 128, 128) for p in prompts], seeds, sampler, batch)
    right, two, each = [], [], []
    expected = zip(scenes.background.tolist(), truth(scenes, 0), truth(scenes, 1), strict=True)
    for out, (bg, *slots) in zip(outs, expected, strict=True):
        background, found = judge_objects(out)
        at = {j.position: (j.color, j.shape, j.size) for j in found}
        hits = [at.get(e[4]) == (e[1], e[2], e[3]) for e in slots]
        each += hits
        two.append(len(found) == 2)
        right.append(background == bg and len(found) == 2 and all(hits))
    return {
        "both_right": round(float(np.mean(right)), 4),
        "each_object_right": round(float(np.mean(each)), 4),
        "exactly_two_objects": round(float(np.mean(two)), 4),
        "n": n,
    }


def eval_compositions(
    pipe: Pipeline, n: int, sampler: SamplerConfig, batch: int, seed: int
) -> dict[str, Any]:
    """A prompt per half of a 256x128 canvas (one object in the middle of each, one background): each half
    holds exactly its object, right in colour and shape."""
    g = torch.Generator().manual_seed(seed)
    left = centred_scenes(n, g, torch.randint(len(world.COLORS), (n,), generator=g))
    right = centred_scenes(n, g, left.background)
    texts = [world.full_captions(s).texts() for s in (left, right)]
    ops = [
        Composition((Region(a, (0.0, 0.0, 0.5, 1.0)), Region(b, (0.5, 0.0, 1.0, 1.0))), 256, 128)
        for a, b in zip(*texts, strict=True)
    ]
    outs = run(pipe, ops, [seed * 7919 + i for i in range(n)], sampler, batch)
    hits = []
    for out, *asked in zip(outs, truth(left), truth(right), strict=True):
        for half, e in zip((out[:, :128], out[:, 128:]), asked, strict=True):
            _, found = judge_objects(half)
            hits.append(len(found) == 1 and (found[0].color, found[0].shape) == (e[1], e[2]))
    return {"region_right": round(float(np.mean(hits)), 4), "regions": len(hits), "n": n}


def centred_scenes(n: int, g: torch.Generator, background: torch.Tensor) -> world.Scenes:
    """One-object scenes in the center on `background` (seen triples only, colour off the background)."""

    def draw() -> world.Scenes:
        color = torch.randint(len(world.COLORS), (n,), generator=g)
        shape = torch.randint(len(world.SHAPES), (n,), generator=g)
        size = torch.randint(len(world.SIZES), (n,), generator=g)
        return world.single_object_scenes(background, color, shape, size, torch.full((n,), CENTER))

    scenes = draw()
    while True:
        bad = ~scenes.valid(allow_held_out=False)
        if not bool(bad.any()):
            return scenes
        scenes = scenes.where(bad, draw())


def evaluate(
    pipe: Pipeline,
    *,
    n_seen: int = 160,
    n_held_out: int = 100,
    n_ops: int = 40,
    n_psnr: int = 128,
    sampler: SamplerConfig | None = None,
    batch: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """Every check of the shapes-world evaluation; returns a JSON-ready dict."""
    sampler = sampler or pipe.config.sampler
    report: dict[str, Any] = {"model": pipe.config.name, "sampler": dataclasses.asdict(sampler), "seed": seed}
    checks: dict[str, Callable[[], dict[str, Any]]] = {
        "generation": lambda: eval_generation(pipe, n_seen, n_held_out, sampler, batch, seed),
        "vqgan_psnr": lambda: eval_psnr(pipe, n_psnr, seed + 1),
        "inpainting": lambda: eval_inpainting(pipe, n_ops, sampler, batch, seed + 2),
        "inpainting_scene_caption": lambda: eval_inpainting(
            pipe, n_ops, sampler, batch, seed + 2, prompt="scene"
        ),
        "two_objects": lambda: eval_two_objects(pipe, n_ops, sampler, batch, seed + 5),
        "compositions": lambda: eval_compositions(pipe, n_ops, sampler, batch, seed + 6),
        "outpainting": lambda: eval_outpainting(pipe, n_ops, sampler, batch, seed + 3),
        "variations": lambda: eval_variations(pipe, n_ops, sampler, batch, seed + 4),
    }
    seconds = {}
    for name, check in checks.items():
        start = time.perf_counter()
        report[name] = check()
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"{name} ({seconds[name]} s): {json.dumps(report[name])}", flush=True)
    report["seconds"] = seconds
    return report


def write_report(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
