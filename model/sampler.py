"""Stateless Paella v1 sampling over discrete VQGAN tokens, with per-image settings and counter-based
randomness.

Everything random is a pure function of (seed, step, stream, position), so an image's tokens depend on
its own seed only, never on the batch it shares. Every setting is a per-row tensor (guidance scale,
temperatures, typical mass, mask, starting tokens, start step, re-noising), so one batch may mix
operations and settings; every step runs batched on the device with no host synchronisation (on a CPU,
where there is no device to wait for, typical filtering sorts in full only the rows that need it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

import torch
from torch import Tensor

Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]  # (tokens, cond, r) -> logits


class Stream(IntEnum):
    """What a random draw is for; each purpose gets an independent stream."""

    INIT = 0  # the starting random codes
    DRAW = 1  # the one uniform per position that picks a code
    RENOISE = 2  # the Bernoulli choice of which positions are re-noised
    CODES = 3  # fresh random codes for re-noising


def _signed(c: int) -> int:
    """A 64-bit constant as the int64 value with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MUL1 = _signed(0xBF58476D1CE4E5B9)
_MUL2 = _signed(0x94D049BB133111EB)


def _shr(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bit patterns (torch's `>>` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: Tensor) -> Tensor:
    """The splitmix64 finaliser (Steele, Lea, Flood 2014) on int64 tensors, wrapping like uint64."""
    z = (z ^ _shr(z, 30)) * _MUL1
    z = (z ^ _shr(z, 27)) * _MUL2
    return z ^ _shr(z, 31)


def random_bits(seeds: Tensor, step: int | Tensor, stream: int, shape: tuple[int, ...]) -> Tensor:
    """Counter-based 64-bit random words [B, *shape] as int64: splitmix64 keyed by (seed, step, stream).

    `step` is one step for every row, or a step per row [B].
    """
    if isinstance(step, Tensor):
        stream_offset: Tensor | int = (
            step.to(torch.int64) * 16 + (stream + 1)
        ) * _GOLDEN  # wraps like uint64
    else:
        stream_offset = _signed((step * 16 + stream + 1) * _GOLDEN % (1 << 64))
    key = _mix(_mix(seeds.to(torch.int64) + _GOLDEN) + stream_offset)  # (B,)
    counter = torch.arange(1, math.prod(shape) + 1, device=seeds.device, dtype=torch.int64) * _GOLDEN
    return _mix(key[:, None] + counter).view(-1, *shape)


def uniforms(seeds: Tensor, step: int | Tensor, stream: int, shape: tuple[int, ...]) -> Tensor:
    """Uniform float32 numbers in [0, 1) [B, *shape] from the top 24 bits of `random_bits`."""
    return _shr(random_bits(seeds, step, stream, shape), 40).to(torch.float32) * 2.0**-24


def random_codes(
    seeds: Tensor, step: int | Tensor, stream: int, shape: tuple[int, ...], num_labels: int
) -> Tensor:
    """Uniformly random codes in [0, num_labels) [B, *shape] as int64."""
    return _shr(random_bits(seeds, step, stream, shape), 1) % num_labels


def noise_level(r: Tensor) -> Tensor:
    """Probability that a token is noise at r: gamma(r) = cos(r*pi/2), clamped to [0, 1] (Paella v1)."""
    return torch.cos(r * (math.pi / 2)).clamp(0.0, 1.0)


def noise_tokens(
    tokens: Tensor,
    r: Tensor,
    *,
    seeds: Tensor,
    step: int | Tensor,
    num_labels: int,
    replacement: Tensor | None = None,
) -> Tensor:
    """Replace each token with probability cos(r*pi/2) by `replacement` or a fresh random code (`add_noise`).

    `r` is a scalar or one value per sample; `step` (one, or one per sample) keys the random streams.
    """
    shape = tuple(tokens.shape[1:])
    p = noise_level(r.to(torch.float32)).reshape(-1, *(1 for _ in shape))  # (B or 1, 1, 1)
    replace = uniforms(seeds, step, Stream.RENOISE, shape) < p
    if replacement is None:
        replacement = random_codes(seeds, step, Stream.CODES, shape, num_labels)
    return torch.where(replace, replacement, tokens)


TYPICAL_CANDIDATES = 64
"""On a CPU, how many lowest-scoring codes per row `typical_keep` ranks before it sorts a whole row: with
paella-mini, 99.5% of rows reach the typical mass within 64 codes, and a 1024-code row's top 64 cost a
fifth of its sort (`benchmarks/README.md`). 0 sorts every row."""


def typical_keep(logits: Tensor, mass: Tensor, min_tokens: Tensor) -> Tensor:
    """Locally typical filtering (Meister et al. 2022) over the last dim of `logits` [N, V]: a bool mask.

    Scores each code by |-log p - H|; keeps every code scoring at most the score of the first code, in
    ascending score order, at which the cumulative probability reaches `mass` [N], and at least
    `min_tokens` [N] codes. Rows with mass <= 0 keep every code.
    """
    logp = logits.log_softmax(-1)
    p = logp.exp()
    entropy = -(p * logp).nansum(-1, keepdim=True)
    score = logp.add_(entropy).abs_()
    candidates = TYPICAL_CANDIDATES if score.device.type == "cpu" else 0  # elsewhere nothing data-dependent
    return (score <= _typical_threshold(score, p, mass, min_tokens, candidates)) | (mass <= 0)[:, None]


def _typical_threshold(
    score: Tensor, p: Tensor, mass: Tensor, min_tokens: Tensor, candidates: int = 0
) -> Tensor:
    """The score [N, 1] at which each row's ascending-score cumulative probability reaches `mass` (at
    least `min_tokens` codes). With `candidates` (0 < k < V), from each row's k lowest scores, sorting in
    full only the rows that need more codes (the host looks at which: a CPU's path). The same threshold:
    the candidates are the sorted row's first codes, and the cumulative sum is sequential, so its first
    terms are the full sort's to the bit."""
    num = score.shape[-1]
    k = candidates if 0 < candidates < num else num
    ranked, order = score.sort(dim=-1) if k == num else score.topk(k, dim=-1, largest=False, sorted=True)
    cum = p.gather(-1, order).cumsum_(-1)
    del order  # [N, V] buffers add up at B=64 x 32 x 32 x 8192: free them early
    last = torch.maximum((cum < mass[:, None]).sum(-1, keepdim=True), min_tokens[:, None] - 1)
    threshold = ranked.gather(-1, last.clamp(0, k - 1))
    if k < num:
        beyond = (last >= k).squeeze(-1)  # the mass or the minimum count lies past the candidates
        if beyond.any():
            threshold[beyond] = _typical_threshold(score[beyond], p[beyond], mass[beyond], min_tokens[beyond])
    return threshold


def draw_codes(
    logits: Tensor,
    u: Tensor,
    *,
    temperature: Tensor,
    typical_mass: Tensor | None = None,
    min_tokens: Tensor | None = None,
) -> Tensor:
    """One code per row of `logits` [N, V] by inverse CDF of one uniform `u` [N] each.

    The tempered softmax (temperature [N]; 0 = argmax) over the locally typical codes (filtering off when
    `typical_mass` is None), walked in code order: the first code whose cumulative weight exceeds
    u * total.
    """
    num = logits.shape[-1]
    z = logits
    if typical_mass is not None:
        floor = torch.ones_like(typical_mass, dtype=torch.int64) if min_tokens is None else min_tokens
        z = logits.masked_fill(~typical_keep(logits, typical_mass, floor), -math.inf)
    t = temperature.clamp_min(torch.finfo(torch.float32).tiny)[:, None]
    cum = (z - z.amax(-1, keepdim=True)).div_(t).exp_().cumsum_(-1)  # removed codes add exactly 0
    target = u[:, None] * cum[:, -1:]
    return (cum <= target).sum(-1).clamp_(max=num - 1)


def guide(cond: Tensor, uncond: Tensor | None, scale: Tensor) -> Tensor:
    """Classifier-free guidance in float32, `uncond + scale * (cond - uncond)` per row where scale >= 0.

    `cond`, `uncond` [B, ...]; `scale` [B]. Without `uncond`, the conditional logits.
    """
    if uncond is None:
        return cond.float()
    s = scale.view(-1, *(1 for _ in cond.shape[1:]))
    return torch.where(s >= 0, torch.lerp(uncond.float(), cond.float(), s), cond.float())


Picker = Callable[..., Tensor]
"""`pick(cond, uncond, rows, u, step) -> codes [B, H, W]` from logits [B, H, W, V] (`uncond` may be None)."""


def pick_codes(cond: Tensor, uncond: Tensor | None, rows: Rows, u: Tensor, step: int) -> Tensor:
    """Guidance, typical filtering and the draw for one step, in plain PyTorch (any device)."""
    B, H, W, V = cond.shape
    logits = guide(cond, uncond, rows.guidance).reshape(-1, V)

    def per_position(values: Tensor) -> Tensor:
        return values.repeat_interleave(H * W)

    codes = draw_codes(
        logits,
        u.reshape(-1),
        temperature=per_position(rows.temperature[:, step]),
        typical_mass=per_position(rows.typical_mass) if rows.typical else None,
        min_tokens=per_position(rows.min_tokens),
    )
    return codes.view(B, H, W)


@dataclass
class Rows:
    """Everything per image that one sampling call needs: tensors on the device (B rows) and the host-side
    facts that decide which work runs (so the loop never reads the device)."""

    cond: Tensor  # (B, c) pooled, or (B, c, h, w) spatial
    uncond: Tensor  # like cond: guidance's unconditional embedding (zeros: the paper's)
    seeds: Tensor  # (B,) int64: seeds[i] alone decides row i's randomness
    init: Tensor  # (B, H, W) int64: kept where mask is False; the start where from_noise is False
    mask: Tensor  # (B, H, W) bool: True where tokens are sampled
    from_noise: Tensor  # (B,) bool: sampled positions start from random codes rather than from init
    guidance: Tensor  # (B,) float32: classifier-free guidance scale; negative = off
    temperature: Tensor  # (B, steps) float32: each step's temperature; 0 = argmax
    typical_mass: Tensor  # (B,) float32: locally typical filtering mass; 0 = off
    min_tokens: Tensor  # (B,) int64: typical filtering keeps at least this many codes
    start_step: Tensor  # (B,) int64: the first step a row runs (structural editing starts late)
    renoise_steps: Tensor  # (B,) int64: after step i a row is re-noised while i < renoise_steps
    renoise_mode: Tensor  # (B,) int64: 0 start, 1 prev, 2 rand (the index in config.RENOISE_MODES)
    first_step: int = 0  # the earliest start step of any row
    guided: bool = True  # some row uses guidance: run cond and uncond as one batch of 2B
    typical: bool = True  # some row filters
    snapshots: tuple[int, ...] = ()  # steps whose predictions are handed back too (previews), ascending

    @property
    def steps(self) -> int:
        return self.temperature.shape[1]

    def split(self) -> tuple[list[Tensor], dict[str, Any]]:
        """The tensors, in field order, and the host-side facts; `Rows.join` puts them back together."""
        tensors = [getattr(self, f.name) for f in dataclasses.fields(self) if f.type == "Tensor"]
        facts = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.type != "Tensor"}
        return tensors, facts

    @classmethod
    def join(cls, tensors: Sequence[Tensor], facts: dict[str, Any]) -> Rows:
        named: dict[str, Any] = dict(zip((f.name for f in dataclasses.fields(cls)), tensors, strict=False))
        return cls(**named, **facts)


class Sampled(NamedTuple):
    """What `sample` hands back: the final tokens [B, H, W] and, per step of `Rows.snapshots`, that step's
    prediction [B, S, H, W] (S = len(snapshots); 0 when none)."""

    tokens: Tensor
    snapshots: Tensor


def preview_steps(steps: int, count: int) -> tuple[int, ...]:
    """`count` steps spread evenly over a run of `steps`, before the last (whose prediction is the image):
    fewer when the run is too short to hold them."""
    picked = {round((j + 1) * steps / (count + 1)) - 1 for j in range(count)}
    return tuple(sorted(s for s in picked if 0 <= s < steps - 1))


def sample(model: Denoiser, rows: Rows, *, num_labels: int, pick: Picker = pick_codes) -> Sampled:
    """Paella v1 sampling (Rampas et al. 2022, `utils.sample` of the reference code), batched and seeded.

    Args:
        model: any callable `(tokens [B,H,W] int64, cond, r [B]) -> logits [B, num_labels, H, W]`.
        rows: the per-image inputs and settings (see `Rows`).
        num_labels: the codebook size.
        pick: turns one step's logits into codes (`pick_codes`, or a fused kernel with its contract).

    Returns:
        the tokens [B, H, W] int64 and the predictions of the steps in `rows.snapshots` (see `Sampled`):
        a step's prediction is its tokens before re-noising, what the image would be were it the last.
    """
    seeds, steps = rows.seeds, rows.steps
    shape = tuple(rows.init.shape[1:])
    start = random_codes(seeds, 0, Stream.INIT, shape, num_labels)
    x = torch.where(rows.mask & rows.from_noise[:, None, None], start, rows.init)
    init = x
    kept = {s: x for s in rows.snapshots}  # steps before the first that runs keep the starting tokens
    r_range = torch.linspace(0, 1, steps + 1, device=seeds.device)
    mode = rows.renoise_mode[:, None, None]
    for i in range(rows.first_step, steps):
        r = r_range[i].expand(seeds.shape[0])
        if rows.guided:
            both = model(torch.cat([x, x]), torch.cat([rows.cond, rows.uncond]), torch.cat([r, r]))
            cond, uncond = (half.permute(0, 2, 3, 1) for half in both.chunk(2))  # (B, H, W, V) each
        else:
            cond, uncond = model(x, rows.cond, r).permute(0, 2, 3, 1), None
        new = pick(cond, uncond, rows, uniforms(seeds, i, Stream.DRAW, shape), i)
        new = torch.where(rows.mask, new, init)
        started = (rows.start_step <= i)[:, None, None]
        if i in kept:
            kept[i] = torch.where(started, new, x)
        if i + 1 < steps:
            fresh = random_codes(seeds, i + 1, Stream.CODES, shape, num_labels)
            replacement = torch.where(mode == 0, init, torch.where(mode == 1, x, fresh))
            noised = noise_tokens(
                new, r_range[i + 1], seeds=seeds, step=i + 1, num_labels=num_labels, replacement=replacement
            )
            new = torch.where((rows.renoise_steps > i)[:, None, None], noised, new)
        x = torch.where(started, new, x)
    snapshots = (
        torch.stack([kept[s] for s in rows.snapshots], 1) if kept else x.new_empty(x.shape[0], 0, *shape)
    )
    return Sampled(x, snapshots)
