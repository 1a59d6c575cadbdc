import dataclasses
import math

import pytest
import torch

from model.config import RENOISE_MODES, SamplerConfig
from model.sampler import (
    TYPICAL_CANDIDATES,
    Rows,
    Stream,
    _typical_threshold,
    draw_codes,
    guide,
    noise_tokens,
    preview_steps,
    random_bits,
    random_codes,
    sample,
    typical_keep,
    uniforms,
)

V = 48  # codebook of the fake model
C = 6  # condition width


class FakeDenoiser:
    """A batch-invariant stand-in: per-sample logits from a token table, the condition and r; logs calls."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(V, V, generator=g) * 2
        self.proj = torch.randn(C, V, generator=g)
        self.calls: list[int] = []
        self.inputs: list[torch.Tensor] = []

    def __call__(self, tokens: torch.Tensor, cond: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        self.calls.append(tokens.shape[0])
        self.inputs.append(tokens)
        spatial = cond.dim() == 4
        c = cond.permute(0, 2, 3, 1) @ self.proj if spatial else (cond @ self.proj)[:, None, None, :]
        logits = self.table[tokens] + c + r[:, None, None, None] * 3
        return logits.permute(0, 3, 1, 2)  # (B, V, H, W)


def rows(
    cond: torch.Tensor,
    seeds: torch.Tensor,
    grid: tuple[int, int],
    config: SamplerConfig,
    *,
    uncond: torch.Tensor | None = None,
    init: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> Rows:
    """Rows of one sampler config for every sample: random starts, or `init` kept outside `mask`."""
    B = seeds.shape[0]

    def full(value: float | int | bool, dtype: torch.dtype) -> torch.Tensor:
        return torch.full((B,), value, dtype=dtype)

    temps = torch.linspace(*config.temp_range, config.steps, dtype=torch.float64).float()
    return Rows(
        cond=cond,
        uncond=torch.zeros_like(cond) if uncond is None else uncond,
        seeds=seeds,
        init=torch.zeros(B, *grid, dtype=torch.int64) if init is None else init,
        mask=torch.ones(B, *grid, dtype=torch.bool) if mask is None else mask,
        from_noise=full(init is None or mask is not None, torch.bool),
        guidance=full(config.guidance_scale, torch.float32),
        temperature=temps.expand(B, -1),
        typical_mass=full(config.mass, torch.float32),
        min_tokens=full(config.typical_min_tokens, torch.int64),
        start_step=full(config.start_step, torch.int64),
        renoise_steps=full(config.effective_renoise_steps, torch.int64),
        renoise_mode=full(RENOISE_MODES.index(config.renoise_mode), torch.int64),
        first_step=config.start_step,
        guided=config.guided,
        typical=config.mass > 0,
    )


def filtered(logits: torch.Tensor, mass: float, min_tokens: int = 1) -> torch.Tensor:
    """Logits with the codes typical filtering removes at -inf."""
    n = logits.shape[0]
    keep = typical_keep(logits, torch.full((n,), mass), torch.full((n,), min_tokens))
    return logits.masked_fill(~keep, float("-inf"))


def _splitmix_reference(seed: int, step: int, stream: int, n: int) -> int:
    mask, golden = (1 << 64) - 1, 0x9E3779B97F4A7C15

    def mix(z: int) -> int:
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & mask
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & mask
        return z ^ (z >> 31)

    key = mix((mix((seed + golden) & mask) + (step * 16 + stream + 1) * golden) & mask)
    return mix((key + (n + 1) * golden) & mask)


def test_random_bits_are_splitmix64_of_seed_step_stream_and_position():
    seeds = [0, 1, 2**62 + 12345, -7]
    bits = random_bits(torch.tensor(seeds), 5, Stream.DRAW, (2, 3)).view(len(seeds), -1)
    for i, seed in enumerate(seeds):
        for n in range(6):
            assert bits[i, n].item() & ((1 << 64) - 1) == _splitmix_reference(seed % 2**64, 5, Stream.DRAW, n)


def test_uniforms_are_deterministic_uniform_and_keyed_by_every_counter():
    seeds = torch.arange(16)
    u = uniforms(seeds, 3, Stream.DRAW, (32, 32))
    assert u.dtype == torch.float32 and u.shape == (16, 32, 32)
    assert torch.equal(u, uniforms(seeds, 3, Stream.DRAW, (32, 32)))
    assert u.min().item() >= 0 and u.max().item() < 1
    assert abs(u.mean().item() - 0.5) < 0.01
    assert abs(u.var().item() - 1 / 12) < 0.005
    assert torch.histc(u, bins=10, min=0, max=1).div(u.numel()).sub(0.1).abs().max() < 0.01
    for other in (uniforms(seeds + 1, 3, Stream.DRAW, (32, 32)), uniforms(seeds, 4, Stream.DRAW, (32, 32))):
        assert (other != u).float().mean() > 0.99
    assert (uniforms(seeds, 3, Stream.RENOISE, (32, 32)) != u).float().mean() > 0.99


def test_random_codes_cover_the_codebook():
    codes = random_codes(torch.arange(4), 0, Stream.INIT, (16, 16), V)
    assert codes.dtype == torch.int64 and codes.min() >= 0 and codes.max() < V
    assert codes.unique().numel() == V


def _slow_typical_keep(logits: torch.Tensor, mass: float, min_tokens: int) -> set[int]:
    """Paella v1's typical filtering spelled out in Python for one row."""
    logp = logits.log_softmax(-1)
    p = logp.exp()
    entropy = -(p * logp).sum()
    score = (logp + entropy).abs().tolist()
    order = sorted(range(len(score)), key=lambda k: score[k])
    total, last = 0.0, len(order) - 1
    for pos, k in enumerate(order):
        total += p[k].item()
        if total >= mass:
            last = pos
            break
    keep = {k for k in order if score[k] <= score[order[last]]}
    return keep | set(order[:min_tokens])


@pytest.mark.parametrize(("mass", "min_tokens"), [(0.2, 1), (0.5, 1), (0.05, 7), (0.9, 3), (0.999, 1)])
def test_typical_filter_matches_a_slow_reimplementation(mass, min_tokens):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(40, V, generator=g) * torch.linspace(0.1, 5, 40)[:, None]
    out = filtered(logits, mass, min_tokens)
    for row in range(logits.shape[0]):
        kept = set(torch.isfinite(out[row]).nonzero().flatten().tolist())
        assert kept == _slow_typical_keep(logits[row], mass, min_tokens)
        assert len(kept) >= min_tokens
        assert torch.equal(out[row, sorted(kept)], logits[row, sorted(kept)])
    off = typical_keep(logits, torch.zeros(40), torch.ones(40, dtype=torch.int64))
    assert off.all()  # mass 0: filtering off


def test_typical_filter_from_candidates_keeps_what_a_full_sort_keeps():
    """On a CPU the threshold comes from each row's lowest-scoring candidates, the rows whose typical set
    reaches past them sorted in full: the same mask as sorting every row, on peaked rows (a few codes),
    flat ones (hundreds), codes at -inf, a minimum count past the candidates and filtering off."""
    g = torch.Generator().manual_seed(3)
    n, v = 96, 1024
    sharpness = torch.logspace(-2, 1.5, n)[:, None]  # flat rows first, peaked last
    logits = torch.randn(n, v, generator=g) * sharpness
    logits[::7, : v // 2] = -math.inf  # half the codebook filtered out before
    mass = torch.rand(n, generator=g) * 0.95
    mass[::11] = 0.0
    min_tokens = torch.ones(n, dtype=torch.int64)
    min_tokens[5::13] = TYPICAL_CANDIDATES + 36
    keep = typical_keep(logits, mass, min_tokens)

    logp = logits.log_softmax(-1)
    p = logp.exp()
    score = (logp + -(p * logp).nansum(-1, keepdim=True)).abs()
    full = (score <= _typical_threshold(score, p, mass, min_tokens)) | (mass <= 0)[:, None]
    assert torch.equal(keep, full)
    sizes = keep[mass > 0].sum(-1)
    assert sizes.min() == 1 and sizes.max() > 3 * TYPICAL_CANDIDATES  # both sides of the candidates
    assert (keep[5::13].sum(-1) >= TYPICAL_CANDIDATES + 36).all()
    for row in (1, 40, 95):  # and against Paella's filtering spelled out
        kept = set(keep[row].nonzero().flatten().tolist())
        assert kept == _slow_typical_keep(logits[row], mass[row].item(), int(min_tokens[row]))


def test_inverse_cdf_reproduces_the_tempered_filtered_distribution():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(V, generator=g) * 2
    n = 20_000
    u = (torch.arange(n, dtype=torch.float64) + 0.5).div(n).float()  # an evenly spread grid of uniforms
    repeated = logits.expand(n, V)
    for temperature, mass in [(1.0, None), (0.5, None), (1.0, 0.3), (1.7, 0.3)]:
        masses = None if mass is None else torch.full((n,), mass)
        codes = draw_codes(repeated, u, temperature=torch.full((n,), temperature), typical_mass=masses)
        allowed = logits if mass is None else filtered(logits[None], mass)[0]
        expected = (allowed / temperature).softmax(-1)
        freq = torch.bincount(codes, minlength=V).double() / n
        assert (freq - expected).abs().max() < 1e-3
        assert freq[expected == 0].sum() == 0


def test_temperature_zero_is_the_argmax_of_the_kept_codes():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(64, V, generator=g) * 3
    u = torch.rand(64, generator=g)
    zero = torch.zeros(64)
    assert torch.equal(draw_codes(logits, u, temperature=zero), logits.argmax(-1))
    got = draw_codes(logits, u, temperature=zero, typical_mass=torch.full((64,), 0.2))
    assert torch.equal(got, filtered(logits, 0.2).argmax(-1))
    mixed = torch.tensor([0.0, 1.0]).repeat(32)  # per-row temperatures: the zero rows are argmax
    assert torch.equal(draw_codes(logits, u, temperature=mixed)[::2], logits.argmax(-1)[::2])


def test_guidance_blends_in_float32_per_row_and_is_off_below_zero():
    g = torch.Generator().manual_seed(4)
    cond = torch.randn(4, 3, 3, V, generator=g).bfloat16()
    uncond = torch.randn(4, 3, 3, V, generator=g).bfloat16()
    scale = torch.tensor([-1.0, 0.0, 1.0, 4.0])
    out = guide(cond, uncond, scale)
    assert out.dtype == torch.float32
    c, un = cond.float(), uncond.float()
    assert torch.equal(out[0], c[0])  # off: the conditional logits exactly
    assert torch.equal(out[1], un[1])
    assert torch.allclose(out[2], c[2]) and torch.allclose(out[3], un[3] + 4 * (c[3] - un[3]), atol=1e-5)
    assert torch.equal(guide(cond, None, scale), c)


def test_guided_sampling_is_one_batched_forward_of_two_b():
    model = FakeDenoiser()
    seeds = torch.tensor([1, 2, 3])
    cond = torch.randn(3, C, generator=torch.Generator().manual_seed(8))
    sample(model, rows(cond, seeds, (4, 4), SamplerConfig(steps=3, guidance_scale=2.0)), num_labels=V)
    assert model.calls == [6, 6, 6]
    model.calls.clear()
    sample(model, rows(cond, seeds, (4, 4), SamplerConfig(steps=3)), num_labels=V)
    assert model.calls == [3, 3, 3]


CONFIGS = [
    SamplerConfig(steps=4),
    SamplerConfig(steps=5, renoise_mode="prev", temp_range=(1.2, 0.3), guidance_scale=3.0),
    SamplerConfig(steps=3, renoise_mode="rand", typical_filtering=False, typical_min_tokens=4),
    SamplerConfig(steps=4, renoise_steps=1, typical_mass=0.6, typical_min_tokens=5, guidance_scale=0.5),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_a_seed_gives_the_same_tokens_alone_or_anywhere_in_a_batch(config):
    model = FakeDenoiser()
    g = torch.Generator().manual_seed(5)
    conds = torch.randn(4, C, generator=g)
    seeds = torch.tensor([11, 7, 123456789012, -3])
    batch = sample(model, rows(conds, seeds, (6, 8), config), num_labels=V).tokens
    assert model.calls == [8 if config.guidance_scale >= 0 else 4] * config.steps
    for i in range(4):
        alone = sample(model, rows(conds[i : i + 1], seeds[i : i + 1], (6, 8), config), num_labels=V).tokens
        assert torch.equal(alone[0], batch[i])
    reordered = sample(model, rows(conds.flip(0), seeds.flip(0), (6, 8), config), num_labels=V).tokens
    assert torch.equal(reordered.flip(0), batch)
    other_seeds = sample(model, rows(conds, seeds + 1, (6, 8), config), num_labels=V).tokens
    assert (other_seeds != batch).float().mean() > 0.2


def test_spatial_conditions_and_negative_embeddings_are_batched_too():
    model = FakeDenoiser()
    g = torch.Generator().manual_seed(6)
    cond, neg = torch.randn(3, C, 4, 4, generator=g), torch.randn(3, C, 4, 4, generator=g)
    config = SamplerConfig(steps=3, guidance_scale=2.0)
    seeds = torch.tensor([1, 2, 3])
    batch = sample(model, rows(cond, seeds, (4, 4), config, uncond=neg), num_labels=V).tokens
    alone = sample(model, rows(cond[2:], seeds[2:], (4, 4), config, uncond=neg[2:]), num_labels=V).tokens
    assert torch.equal(alone[0], batch[2])
    zero = sample(model, rows(cond, seeds, (4, 4), config), num_labels=V).tokens
    assert not torch.equal(zero, batch)


def test_a_mask_keeps_the_unmasked_tokens_exactly():
    model = FakeDenoiser()
    g = torch.Generator().manual_seed(7)
    init = torch.randint(0, V, (2, 8, 8), generator=g)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[0, 2:5, 1:7] = True
    mask[1, :, 4:] = True
    for mode in ("start", "prev", "rand"):
        config = SamplerConfig(steps=4, renoise_mode=mode, guidance_scale=2.0)
        cond = torch.randn(2, C, generator=g)
        out = sample(
            model, rows(cond, torch.tensor([5, 6]), (8, 8), config, init=init, mask=mask), num_labels=V
        ).tokens
        assert torch.equal(out[~mask], init[~mask])
        assert (out[mask] != init[mask]).float().mean() > 0.5


def test_starting_at_the_last_step_returns_the_initial_tokens():
    init = torch.randint(0, V, (2, 4, 4))
    config = SamplerConfig(steps=6, start_step=6)
    out = sample(
        FakeDenoiser(), rows(torch.randn(2, C), torch.tensor([1, 2]), (4, 4), config, init=init), num_labels=V
    ).tokens
    assert torch.equal(out, init)


def test_noise_tokens_replaces_with_probability_cos_r_pi_over_2():
    tokens = torch.zeros(64, 32, 32, dtype=torch.int64)
    seeds = torch.arange(64)
    replacement = torch.ones_like(tokens)
    for r in (0.0, 0.25, 0.5, 0.9, 1.0):
        out = noise_tokens(
            tokens, torch.tensor(r), seeds=seeds, step=1, num_labels=V, replacement=replacement
        )
        assert abs(out.float().mean().item() - max(math.cos(r * math.pi / 2), 0)) < 0.01
    fresh = noise_tokens(tokens, torch.tensor(0.0), seeds=seeds, step=1, num_labels=V)
    assert fresh.unique().numel() == V
    per_sample = noise_tokens(
        tokens[:2],
        torch.tensor([0.0, 1.0]),
        seeds=seeds[:2],
        step=1,
        num_labels=V,
        replacement=replacement[:2],
    )
    assert per_sample[0].all() and not per_sample[1].any()
    steps = noise_tokens(
        tokens[:2], torch.tensor(0.5), seeds=seeds[:2], step=torch.tensor([1, 2]), num_labels=V
    )
    for i, step in enumerate((1, 2)):  # a step per sample keys each one's streams
        one = noise_tokens(
            tokens[i : i + 1], torch.tensor(0.5), seeds=seeds[i : i + 1], step=step, num_labels=V
        )
        assert torch.equal(steps[i], one[0])


def test_snapshots_are_the_steps_predictions_of_the_same_run():
    """Snapshots cost no forward pass and leave the tokens alone; without re-noising, a step's prediction
    is exactly what the next step feeds the denoiser."""
    model = FakeDenoiser()
    g = torch.Generator().manual_seed(9)
    cond, seeds = torch.randn(3, C, generator=g), torch.tensor([4, 5, 6])
    config = SamplerConfig(steps=5, renoise_steps=0, guidance_scale=2.0)
    plain = sample(model, rows(cond, seeds, (4, 4), config), num_labels=V)
    assert plain.snapshots.shape == (3, 0, 4, 4)
    model.calls.clear()
    model.inputs.clear()
    previewed = sample(
        model, dataclasses.replace(rows(cond, seeds, (4, 4), config), snapshots=(1, 3)), num_labels=V
    )
    assert model.calls == [6] * 5
    assert torch.equal(previewed.tokens, plain.tokens)
    assert previewed.snapshots.shape == (3, 2, 4, 4)
    for k, step in enumerate((1, 3)):
        assert torch.equal(previewed.snapshots[:, k], model.inputs[step + 1][:3])  # cond half of the 2B
    assert not torch.equal(previewed.snapshots[:, 0], previewed.snapshots[:, 1])


def test_preview_steps_spread_evenly_before_the_last_step():
    assert preview_steps(8, 0) == ()
    assert preview_steps(8, 1) == (3,)
    assert preview_steps(8, 2) == (2, 4)
    assert preview_steps(8, 3) == (1, 3, 5)
    assert preview_steps(2, 3) == (0,)  # a short run holds fewer
    assert preview_steps(1, 2) == ()
