"""The sampler's per-row inputs (`model.sampler.Rows`) for a batch of draws of any operations sharing a
canvas and a step count: conditioning, starting tokens, masks and sampler settings, image by image."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from model.conditioning import interpolate, region_map
from model.config import RENOISE_MODES
from model.ops import Composition, Draw, Generate, Inpaint, Interpolation, Outpaint, StructuralEdit, Variation
from model.sampler import Rows, noise_tokens
from model.transfer import to_device

if TYPE_CHECKING:
    from model.pipeline import Pipeline


@torch.inference_mode()
def build_rows(pipe: Pipeline, draws: Sequence[Draw]) -> Rows:
    """The sampler's per-row inputs for `draws` (one canvas, one step count)."""
    if not draws:
        raise ValueError("no draws")
    sizes, steps = {d.op.size for d in draws}, {d.sampler.steps for d in draws}
    if len(sizes) != 1 or len(steps) != 1:
        raise ValueError(f"one batch has one canvas and one step count, got {sizes} and {steps}")
    (width, height), (T,) = sizes.pop(), steps
    grid = pipe.config.grid(width, height)
    text = pipe._text(draws)
    seen = pipe._seen(draws)
    tokens = pipe._encoded(draws)
    spatial = any(isinstance(d.op, Composition) for d in draws)
    num_labels = pipe.config.denoiser.num_labels
    # Whole-batch tensors, filled row by row only where an operation brings its own: a batch of
    # generations costs a fixed number of device operations, however many images it holds (the GPU
    # thread shares the interpreter lock with the event loop; every operation is a chance to wait).
    init = torch.zeros((len(draws), *grid), dtype=torch.int64, device=pipe.device)
    mask = torch.ones((len(draws), *grid), dtype=torch.bool, device=pipe.device)
    conds: list[Tensor] = []
    unconds: list[Tensor] = []
    from_noise, start_step, mode = [], [], []
    zeros = torch.zeros(pipe.config.clip.embed_dim, device=pipe.device)
    for i, d in enumerate(draws):
        op, config = d.op, d.sampler
        uncond, noise, first, renoise = zeros, True, config.start_step, config.renoise_mode
        if isinstance(op, Generate):
            cond = text[op.prompt]
            uncond = zeros if op.negative_prompt is None else text[op.negative_prompt]
        elif isinstance(op, Inpaint):
            cond, init[i] = text[op.prompt], tokens[op.image]
            f = pipe.config.downscale
            pixel = to_device(torch.from_numpy(op.mask.array()), pipe.device)
            mask[i] = pixel.view(grid[0], f, grid[1], f).any(dim=3).any(dim=1)  # tokens touching the mask
        elif isinstance(op, Outpaint):
            cond = text[op.prompt]
            init[i], mask[i] = _canvas(pipe, op, tokens[op.image], grid)
        elif isinstance(op, Variation):
            cond = seen[op.image]
        elif isinstance(op, Interpolation):
            a, b = (text[e] if isinstance(e, str) else seen[e] for e in (op.start, op.end))
            t = to_device(torch.tensor(op.t(d.index)), pipe.device)
            cond = interpolate(a.float(), b.float(), t, op.mode)
        elif isinstance(op, Composition):
            cond = region_map(op.regions, torch.stack([text[r.prompt] for r in op.regions]), grid)
        elif isinstance(op, StructuralEdit):
            k = max(first, op.start_step(T))
            r = to_device(torch.tensor(k / T), pipe.device)
            seeds = pipe.seed_tensor([d.seed])
            start = noise_tokens(tokens[op.image][None], r, seeds=seeds, step=k, num_labels=num_labels)
            init[i] = start[0]
            cond, noise, first, renoise = text[op.prompt], False, k, "prev"
        else:
            raise TypeError(f"unknown operation {type(op).__name__}")
        if spatial and cond.dim() == 1:  # a pooled embedding among maps: the same vector everywhere
            cond = cond[:, None, None].expand(-1, *grid)
        if spatial and uncond.dim() == 1:
            uncond = uncond[:, None, None].expand(-1, *grid)
        conds.append(cond)
        unconds.append(uncond)
        from_noise.append(noise)
        start_step.append(first)
        mode.append(RENOISE_MODES.index(renoise))
    dtype = pipe._dtype(pipe.denoiser)
    configs = [d.sampler for d in draws]
    # the per-row numbers travel in two host tensors, one copy each
    floats = to_device(
        torch.tensor(
            [[c.guidance_scale, c.mass, *_temperatures(c.temp_range, T)] for c in configs],
            dtype=torch.float32,
        ),
        pipe.device,
    )
    ints = to_device(
        torch.tensor(
            [
                [signed(d.seed), c.typical_min_tokens, s, c.effective_renoise_steps, m, n]
                for d, c, s, m, n in zip(draws, configs, start_step, mode, from_noise, strict=True)
            ],
            dtype=torch.int64,
        ),
        pipe.device,
    )
    return Rows(
        cond=torch.stack(conds).to(dtype),
        uncond=torch.stack(unconds).to(dtype),
        seeds=ints[:, 0],
        init=init,
        mask=mask,
        from_noise=ints[:, 5].bool(),
        guidance=floats[:, 0],
        temperature=floats[:, 2:],
        typical_mass=floats[:, 1],
        min_tokens=ints[:, 1],
        start_step=ints[:, 2],
        renoise_steps=ints[:, 3],
        renoise_mode=ints[:, 4],
        first_step=min(start_step),
        guided=any(c.guided for c in configs),
        typical=any(c.mass > 0 for c in configs),
    )


def _canvas(pipe: Pipeline, op: Outpaint, tokens: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """An outpainting's starting tokens, the picture's tokens in place, and its mask (True outside)."""
    f = pipe.config.downscale
    if any(side % f for side in (op.left, op.right, op.up, op.down)):
        raise ValueError(f"outpainting sides must be multiples of {f}")
    h, w = tokens.shape
    top, left = op.up // f, op.left // f
    canvas = torch.zeros(grid, dtype=torch.int64, device=pipe.device)
    canvas[top : top + h, left : left + w] = tokens
    mask = torch.ones(grid, dtype=torch.bool, device=pipe.device)
    mask[top : top + h, left : left + w] = False
    return canvas, mask


def signed(seed: int) -> int:
    """A seed as an int64 value; a uint64 keeps its bits."""
    return (int(seed) + 2**63) % 2**64 - 2**63


@functools.lru_cache(maxsize=256)
def _temperatures(temp_range: tuple[float, float], steps: int) -> tuple[float, ...]:
    """Each step's temperature: `temp_range` spread linearly over the steps (as torch.linspace in float64)."""
    return tuple(torch.linspace(*temp_range, steps, dtype=torch.float64).tolist())
