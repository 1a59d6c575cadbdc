"""Finite scalar quantization (Mentzer et al. 2023) for training the VQGAN, stored as v1's Gumbel layout.

A few dimensions of the encoder's features are bounded and each rounded to one of L levels; the codebook
is the grid of every level combination (4^5 = 1024 for paella-mini), so no code can go unused for want of
gradient, the failure that left the Gumbel quantizer with about 30 of 1024 codes. Straight-through
rounding trains the encoder.

Serving keeps Paella v1's quantizer (`model.vqgan.GumbelQuantizer`: code logits by a 1x1 conv, argmax,
codebook lookup), so the published model and paella-mini load through the same code. `export` writes an
FSQ into that layout exactly: per dimension, rounding `b * tanh(z)` to the nearest level is choosing the
level j whose line `v_j * z - T_j` is highest, where `v_j` are the levels and `T_j` sums the thresholds
below j (in z before the tanh); summed over dimensions, the argmax over the 1024 sums is the argmax of a
linear map of the features, which is the `proj` conv. The codebook rows are the output projection of
each grid point.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from model.vqgan import GumbelQuantizer


class FSQ(nn.Module):
    """Features (B, c, h, w) -> a straight-through grid point projected back to (B, c, h, w), and its index.

    `levels` (L_1, ..., L_d): the index is the mixed-radix number of the per-dimension level indices, the
    first dimension most significant.
    """

    bound: Tensor
    centre: Tensor
    radix: Tensor

    def __init__(self, channels: int, levels: tuple[int, ...]):
        super().__init__()
        self.levels = levels
        self.inp = nn.Conv2d(channels, len(levels), kernel_size=1)
        self.out = nn.Conv2d(len(levels), channels, kernel_size=1)
        n = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("bound", n / 2, persistent=False)  # bound: values in (-L/2, L/2)
        self.register_buffer("centre", (n - 1) / 2, persistent=False)  # level j has value j - centre
        radix = [math.prod(levels[k + 1 :]) for k in range(len(levels))]
        self.register_buffer("radix", torch.tensor(radix), persistent=False)

    @property
    def n_codes(self) -> int:
        return math.prod(self.levels)

    def bounded(self, x: Tensor) -> Tensor:
        """(B, d, h, w): the projected features squashed into (-L/2, L/2) per dimension."""
        z = self.inp(x).float()
        return self.bound.view(1, -1, 1, 1) * torch.tanh(z)

    def level_indices(self, x: Tensor) -> Tensor:
        """(B, d, h, w) int64: each dimension's nearest level, 0..L-1."""
        b = self.bounded(x)
        top = (torch.tensor(self.levels, device=x.device) - 1).view(1, -1, 1, 1)
        j = torch.floor(b + self.bound.view(1, -1, 1, 1)).long()
        return torch.minimum(j.clamp_min(0), top)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b = self.bounded(x)
        j = self.level_indices(x)
        values = j.float() - self.centre.view(1, -1, 1, 1)
        q = b + (values - b).detach()  # straight-through rounding
        index = (j * self.radix.view(1, -1, 1, 1)).sum(1)  # (B, h, w)
        return self.out(q.to(x.dtype)), index

    def grid(self) -> Tensor:
        """(n_codes, d) level values of every code, in index order."""
        rows = itertools.product(*[range(n) for n in self.levels])
        return torch.tensor(list(rows), dtype=torch.float32) - self.centre.cpu()

    def thresholds(self) -> list[Tensor]:
        """Per dimension, the L - 1 values of the pre-tanh feature where rounding moves up a level."""
        out = []
        for n in self.levels:
            edges = torch.arange(1, n, dtype=torch.float64) - n / 2  # between levels, in bounded units
            out.append(torch.atanh(edges / (n / 2)))
        return out

    @torch.no_grad()
    def export(self, quantizer: GumbelQuantizer) -> None:
        """Write this quantizer into `quantizer`'s `proj` and `embed` so that argmax codes and their
        codebook rows equal this module's indices and outputs."""
        assert self.inp.bias is not None and self.out.bias is not None and quantizer.proj.bias is not None
        grid = self.grid().double()  # (n, d)
        offsets = torch.stack(
            [
                torch.cat([torch.zeros(1, dtype=torch.float64), t.cumsum(0)])  # T_j: thresholds below j
                for t in self.thresholds()
            ]
        )  # (d, L)
        level = (grid + self.centre.cpu().double()).round().long()  # (n, d) level indices
        below = offsets.gather(1, level.T).T  # (n, d)
        w_in = self.inp.weight.double().flatten(1).cpu()  # (d, c)
        b_in = self.inp.bias.double().cpu()  # (d,)
        weight = grid @ w_in  # (n, c): sum_d v_j(d) * w_d
        bias = grid @ b_in - below.sum(1)  # (n,)
        quantizer.proj.weight.copy_(weight.view(*quantizer.proj.weight.shape).float())
        quantizer.proj.bias.copy_(bias.float())
        out_w = self.out.weight.double().flatten(1).cpu()  # (c, d)
        embed = grid @ out_w.T + self.out.bias.double().cpu()  # (n, c)
        quantizer.embed.weight.copy_(embed.float())
