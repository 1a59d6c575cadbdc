"""Stateless Paella v1 sampling over discrete VQGAN tokens, with counter-based per-sample randomness.

Everything random is a pure function of (seed, step, stream, position), so a sample's tokens depend on its
own seed only, never on the batch it shares; every step runs batched on the device with no host syncs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import IntEnum

import torch

from model.config import SamplerConfig

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (tokens, cond, r) -> logits


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


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's `>>` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser (Steele, Lea, Flood 2014) on int64 tensors, wrapping like uint64."""
    z = (z ^ _shr(z, 30)) * _MUL1
    z = (z ^ _shr(z, 27)) * _MUL2
    return z ^ _shr(z, 31)


def random_bits(seeds: torch.Tensor, step: int, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Counter-based 64-bit random words [B, *shape] as int64: splitmix64 keyed by (seed, step, stream)."""
    stream_offset = _signed((step * 16 + stream + 1) * _GOLDEN % (1 << 64))
    key = _mix(_mix(seeds.to(torch.int64) + _GOLDEN) + stream_offset)  # (B,)
    counter = torch.arange(1, math.prod(shape) + 1, device=seeds.device, dtype=torch.int64) * _GOLDEN
    return _mix(key[:, None] + counter).view(-1, *shape)


def uniforms(seeds: torch.Tensor, step: int, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform float32 numbers in [0, 1) [B, *shape] from the top 24 bits of `random_bits`."""
    return _shr(random_bits(seeds, step, stream, shape), 40).to(torch.float32) * 2.0**-24


def random_codes(
    seeds: torch.Tensor, step: int, stream: int, shape: tuple[int, ...], num_labels: int
) -> torch.Tensor:
    """Uniformly random codes in [0, num_labels) [B, *shape] as int64."""
    return _shr(random_bits(seeds, step, stream, shape), 1) % num_labels


def noise_level(r: torch.Tensor) -> torch.Tensor:
    """Probability that a token is noise at r: gamma(r) = cos(r*pi/2), clamped to [0, 1] (Paella v1)."""
    return torch.cos(r * (math.pi / 2)).clamp(0.0, 1.0)


def noise_tokens(
    tokens: torch.Tensor,
    r: torch.Tensor,
    *,
    seeds: torch.Tensor,
    step: int,
    num_labels: int,
    replacement: torch.Tensor | None = None,
) -> torch.Tensor:
    """Replace each token with probability cos(r*pi/2) by `replacement` or a fresh random code (`add_noise`).

    `r` is a scalar or one value per sample; `step` keys the random streams (the index of the noise level r).
    """
    shape = tuple(tokens.shape[1:])
    p = noise_level(r.to(torch.float32)).reshape(-1, *(1 for _ in shape))  # (B or 1, 1, 1)
    replace = uniforms(seeds, step, Stream.RENOISE, shape) < p
    if replacement is None:
        replacement = random_codes(seeds, step, Stream.CODES, shape, num_labels)
    return torch.where(replace, replacement, tokens)


def _typical_order(
    logits: torch.Tensor, mass: float, min_tokens: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes in typicality order, their cumulative probabilities and the kept-prefix length (Meister 2022).

    Scores |-log p - H|, sorts ascending (stable), and keeps every code scoring at most the score of the
    first code at which the cumulative probability reaches `mass`, and at least `min_tokens`: a prefix of
    the sorted order. Returns (order [..., V] int64, cumulative probs [..., V], kept count [..., 1]).
    """
    num = logits.shape[-1]
    logp = logits.log_softmax(-1)
    p = logp.exp()
    entropy = -(p * logp).nansum(-1, keepdim=True)
    score, order = logp.add_(entropy).abs_().sort(dim=-1, stable=True)
    del logp  # [..., V] buffers add up at B=64 x 32 x 32 x 8192: free and reuse them early
    cum = p.gather(-1, order).cumsum_(-1)
    del p
    last = (cum < mass).sum(-1, keepdim=True).clamp(max=num - 1)
    kept = (score <= score.gather(-1, last)).sum(-1, keepdim=True).clamp(min=min(min_tokens, num))
    return order, cum, kept


def typical_filter(logits: torch.Tensor, mass: float, min_tokens: int = 1) -> torch.Tensor:
    """Locally typical filtering over the last dim (Meister et al. 2022): removed codes get -inf logits."""
    order, _, kept = _typical_order(logits, mass, min_tokens)
    keep_sorted = torch.arange(logits.shape[-1], device=logits.device) < kept
    keep = torch.empty_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def draw_codes(
    logits: torch.Tensor,
    u: torch.Tensor,
    *,
    temperature: float,
    typical_mass: float | None = None,
    typical_min_tokens: int = 1,
) -> torch.Tensor:
    """One code per row of `logits` [..., V] by inverse CDF of one uniform `u` [...] each.

    The tempered softmax (temperature 0 = argmax) over the locally typical codes (off when `typical_mass`
    is None), walked in the same sorted order the filter produced, so one sort serves both.
    """
    num = logits.shape[-1]
    if typical_mass is None:
        if temperature == 0:
            return logits.argmax(-1)
        order, kept = None, torch.full_like(u, num, dtype=torch.int64).unsqueeze(-1)
        cum = (logits / temperature).softmax(-1).cumsum_(-1)
    else:
        order, cum, kept = _typical_order(logits, typical_mass, typical_min_tokens)
        if temperature != 1:  # re-weight the kept prefix; at temperature 1 the filter's own CDF serves
            ranked = logits.gather(-1, order).masked_fill_(
                torch.arange(num, device=u.device) >= kept, -math.inf
            )
            if temperature == 0:
                return order.gather(-1, ranked.argmax(-1, keepdim=True)).squeeze(-1)
            cum = ranked.div_(temperature).softmax(-1).cumsum_(-1)
    total = cum.gather(-1, kept - 1)
    idx = torch.searchsorted(cum, u.unsqueeze(-1) * total, right=True).clamp_(max=kept - 1)
    return (idx if order is None else order.gather(-1, idx)).squeeze(-1)


def guided_logits(
    model: Denoiser,
    tokens: torch.Tensor,
    cond: torch.Tensor,
    r: torch.Tensor,
    *,
    scale: float,
    uncond: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits [B, V, H, W]; with scale >= 0, classifier-free guidance `lerp(uncond, cond, scale)` from ONE
    batched forward of 2B (uncond None means the zero embedding)."""
    if scale < 0:
        return model(tokens, cond, r)
    uncond = torch.zeros_like(cond) if uncond is None else uncond
    both = model(torch.cat([tokens, tokens]), torch.cat([cond, uncond]), torch.cat([r, r]))
    logits_cond, logits_uncond = both.chunk(2)
    return torch.lerp(logits_uncond, logits_cond, scale)


def temperatures(config: SamplerConfig) -> list[float]:
    """The per-step temperatures, linear over the steps from `temp_range[0]` to `temp_range[1]`."""
    return torch.linspace(
        config.temp_range[0], config.temp_range[1], config.steps, dtype=torch.float64
    ).tolist()


def sample(
    model: Denoiser,
    cond: torch.Tensor,
    *,
    seeds: torch.Tensor,
    grid: tuple[int, int],
    config: SamplerConfig,
    num_labels: int,
    uncond: torch.Tensor | None = None,
    init_tokens: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Paella v1 sampling (Rampas et al. 2022, `utils.sample` of the reference code), batched and seeded.

    Args:
        model: any callable `(tokens [B,H,W] int64, cond, r [B]) -> logits [B, num_labels, H, W]`.
        cond: the condition, [B, c] or a spatial map [B, c, h, w].
        seeds: [B] int64 on the device; `seeds[i]` alone decides sample i's randomness.
        grid: the token grid (H, W).
        config: the sampler's knobs (steps, renoise, temperatures, typical filtering, guidance, start step).
        num_labels: the codebook size.
        uncond: the guidance's unconditional embedding, shaped like `cond`; None means zeros. Only used
            when `config.guidance_scale >= 0`.
        init_tokens: [B, H, W] starting tokens; None means uniformly random codes.
        mask: [B, H, W] bool, True where tokens are sampled; elsewhere `init_tokens` are kept exactly.

    Returns:
        tokens [B, H, W] int64.
    """
    batch, shape = seeds.shape[0], tuple(grid)
    device = cond.device
    if init_tokens is None:
        if mask is not None:
            raise ValueError("a mask needs init_tokens to keep")
        x = random_codes(seeds, 0, Stream.INIT, shape, num_labels)
    elif mask is not None:
        x = torch.where(mask, random_codes(seeds, 0, Stream.INIT, shape, num_labels), init_tokens)
    else:
        x = init_tokens.to(torch.int64)
    init = x
    r_range = torch.linspace(0, 1, config.steps + 1, device=device)
    temps = temperatures(config)
    typical_mass = config.typical_mass if config.typical_filtering else None
    for i in range(config.start_step, config.steps):
        prev = x
        r = r_range[i].expand(batch)
        logits = guided_logits(model, x, cond, r, scale=config.guidance_scale, uncond=uncond)  # (B, V, H, W)
        logits = logits.permute(0, 2, 3, 1).float().contiguous()  # (B, H, W, V)
        u = uniforms(seeds, i, Stream.DRAW, shape)
        x = draw_codes(
            logits,
            u,
            temperature=temps[i],
            typical_mass=typical_mass,
            typical_min_tokens=config.typical_min_tokens,
        )
        if mask is not None:
            x = torch.where(mask, x, init)
        if i < config.effective_renoise_steps:
            replacement = {"start": init, "prev": prev, "rand": None}[config.renoise_mode]
            x = noise_tokens(
                x, r_range[i + 1], seeds=seeds, step=i + 1, num_labels=num_labels, replacement=replacement
            )
    return x
