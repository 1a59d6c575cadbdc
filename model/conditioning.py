"""Conditioning maths of the image operations: interpolated embeddings (lerp, slerp) and region maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from model.ops import InterpolationMode, Region


def interpolate(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, mode: InterpolationMode) -> torch.Tensor:
    """Linear or spherical (Shoemake 1985) interpolation from a (t=0) to b (t=1), exact at both ends."""
    if mode == "lerp":
        return torch.lerp(a, b, t)
    if mode != "slerp":
        raise ValueError(f"unknown interpolation mode {mode!r}")
    cos = torch.dot(a / a.norm(), b / b.norm()).clamp(-1, 1)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    if sin.abs() < 1e-6:  # (anti)parallel: the arc is undefined, take the chord
        return torch.lerp(a, b, t)
    return (torch.sin((1 - t) * omega) / sin) * a + (torch.sin(t * omega) / sin) * b  # exact ends: 1 and 0


def region_map(regions: Sequence[Region], embeddings: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A spatial condition [c, h, w]: each token position gets the weighted mean of the embeddings [R, c]
    of the regions whose box holds its centre; positions no region covers get zeros (the uncond)."""
    h, w = grid
    device = embeddings.device
    ys = (torch.arange(h, device=device) + 0.5) / h
    xs = (torch.arange(w, device=device) + 0.5) / w
    cover = torch.zeros(len(regions), h, w, device=device)
    for k, region in enumerate(regions):
        left, top, right, bottom = region.box or (0.0, 0.0, 1.0, 1.0)
        inside = ((ys >= top) & (ys < bottom))[:, None] & ((xs >= left) & (xs < right))[None, :]
        cover[k] = inside * region.weight
    total = torch.einsum("rhw,rc->chw", cover, embeddings.float())
    return total / cover.sum(0).clamp_min(torch.finfo(total.dtype).tiny)
