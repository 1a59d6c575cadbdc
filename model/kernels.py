"""A fused Triton kernel for the sampler's per-step pick on CUDA: classifier-free guidance in float32,
locally typical filtering (Meister et al. 2022) and the inverse-CDF draw, one program per token position,
with the position's whole row of code logits kept on chip.

It computes what `model.sampler.pick_codes` computes (the same distribution and the same walk in code
order), but reads each logit once instead of sorting every row: the typical threshold is found by
bisection over the bit patterns of the scores (non-negative floats order like their bits), so it is the
exact score at which the cumulative mass is reached. Sums run in another order than PyTorch's, so a code
at a boundary can differ in rare positions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - a machine without Triton keeps the PyTorch picker
    triton = None


def available(device: torch.device) -> bool:
    """Whether the fused pick can run on `device` (CUDA with Triton)."""
    return triton is not None and device.type == "cuda"


if triton is not None:

    @triton.jit
    def _pick(
        cond_ptr,
        uncond_ptr,
        out_ptr,
        guidance_ptr,
        temperature_ptr,
        mass_ptr,
        min_tokens_ptr,
        u_ptr,
        positions,
        num_codes,
        steps,
        step,
        GUIDED: tl.constexpr,
        TYPICAL: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        image = row // positions
        offs = tl.arange(0, BLOCK)
        valid = offs < num_codes
        logits = tl.load(cond_ptr + row * num_codes + offs, mask=valid, other=0.0).to(tl.float32)
        if GUIDED:
            scale = tl.load(guidance_ptr + image)
            uncond = tl.load(uncond_ptr + row * num_codes + offs, mask=valid, other=0.0).to(tl.float32)
            diff = logits - uncond  # torch.lerp(uncond, cond, scale), rounded as PyTorch rounds it
            lerp = tl.where(scale < 0.5, uncond + scale * diff, logits - diff * (1.0 - scale))
            logits = tl.where(scale >= 0, lerp, logits)
        logits = tl.where(valid, logits, float("-inf"))
        keep = valid
        if TYPICAL:
            mass = tl.load(mass_ptr + image)
            top = tl.max(logits, axis=0)
            e = tl.exp(logits - top)
            total = tl.sum(e, axis=0)
            logp = logits - top - tl.log(total)
            p = e / total
            entropy = -tl.sum(tl.where(valid, p * logp, 0.0), axis=0)
            score = tl.where(valid, tl.abs(logp + entropy), float("inf"))
            bits = score.to(tl.int32, bitcast=True)  # non-negative floats order like their bit patterns
            highest = tl.max(tl.where(valid, bits, 0), axis=0)
            lo = tl.zeros((), dtype=tl.int32)
            hi = highest
            for _ in range(31):  # the least bit pattern whose codes reach the mass
                mid = lo + (hi - lo) // 2
                reached = tl.sum(tl.where(bits <= mid, p, 0.0), axis=0) >= mass
                hi = tl.where(reached, mid, hi)
                lo = tl.where(reached, lo, mid + 1)
            floor = tl.load(min_tokens_ptr + image).to(tl.int32)
            if floor > 1:  # and at least `floor` codes: the least bit pattern that many codes stay under
                lo = tl.zeros((), dtype=tl.int32)
                least = highest
                for _ in range(31):
                    mid = lo + (least - lo) // 2
                    enough = tl.sum((bits <= mid).to(tl.int32), axis=0) >= floor
                    least = tl.where(enough, mid, least)
                    lo = tl.where(enough, lo, mid + 1)
                hi = tl.maximum(hi, least)
            keep = valid & (bits <= tl.where(mass > 0, hi, highest))  # mass 0: filtering off
        temperature = tl.maximum(tl.load(temperature_ptr + image * steps + step), 1.1754943508222875e-38)
        kept = tl.where(keep, logits, float("-inf"))
        weights = tl.exp((kept - tl.max(kept, axis=0)) / temperature)  # removed codes weigh exactly 0
        cum = tl.cumsum(weights, axis=0)
        target = tl.load(u_ptr + row) * tl.max(cum, axis=0)
        code = tl.sum((valid & (cum <= target)).to(tl.int32), axis=0)
        tl.store(out_ptr + row, tl.minimum(code, num_codes - 1).to(tl.int64))


def pick_codes_fused(cond: Tensor, uncond: Tensor | None, rows: Any, u: Tensor, step: int) -> Tensor:
    """`model.sampler.pick_codes`, fused (CUDA, or Triton's interpreter on a CPU)."""
    B, H, W, V = cond.shape
    out = torch.empty(B, H, W, dtype=torch.int64, device=cond.device)
    cond = cond.contiguous()
    # the kernel indexes every tensor as contiguous; the per-row settings come as strided views of the
    # rows' packed tensors (`model.rows`), and only a CUDA graph's static copies made them contiguous
    _pick[(B * H * W,)](
        cond,
        cond if uncond is None else uncond.contiguous(),
        out,
        rows.guidance.contiguous(),
        rows.temperature.contiguous(),
        rows.typical_mass.contiguous(),
        rows.min_tokens.contiguous(),
        u.contiguous(),
        H * W,
        V,
        rows.temperature.shape[1],
        step,
        GUIDED=uncond is not None,
        TYPICAL=bool(rows.typical),
        BLOCK=triton.next_power_of_2(V),
        num_warps=16 if V >= 4096 else 4,
    )
    return out
