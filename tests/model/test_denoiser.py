import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.config import PAELLA_V1, DenoiserConfig
from model.denoiser import Denoiser, Upsample, upsample_by_matmul

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TINY = DenoiserConfig(
    num_labels=64, c_hidden=32, c_clip=16, c_r=8, down_levels=(1, 2, 2), up_levels=(2, 2, 1)
)


@pytest.fixture(scope="module")
def tiny() -> Denoiser:
    torch.manual_seed(0)
    model = Denoiser(TINY).eval()
    with torch.no_grad():  # layer scale ~1 so that every block moves the output
        for name, p in model.named_parameters():
            if name.endswith(".gamma") and not name.endswith("ln.gamma"):
                p.fill_(1.0)
    return model


def inputs(b: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, TINY.num_labels, (b, h, w), generator=g)
    return tokens, torch.randn(b, TINY.c_clip, generator=g), torch.rand(b, generator=g)


def test_full_size_state_dict_matches_the_published_names_and_shapes():
    expected = json.loads((FIXTURES / "paella-v1-denoiser.keys.json").read_text())
    with torch.device("meta"):
        model = Denoiser(PAELLA_V1.denoiser)
    state = model.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == expected["tensors"]
    assert list(state) == list(expected["tensors"])
    assert sum(v.numel() for v in state.values()) == expected["n_params"]


@pytest.mark.parametrize("size", [(8, 8), (8, 12), (16, 8), (12, 20)])
def test_logits_shape_at_several_grid_sizes(tiny: Denoiser, size: tuple[int, int]):
    tokens, clip, r = inputs(2, *size)
    with torch.inference_mode():
        logits = tiny(tokens, clip, r)
    assert logits.shape == (2, TINY.num_labels, *size)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("size", [(8, 6), (16, 4)])
def test_grid_must_be_a_multiple_of_the_grid_multiple_and_at_least_twice_it(tiny: Denoiser, size):
    tokens, clip, r = inputs(1, *size)
    with pytest.raises(ValueError, match="multiples of 4, at least 8"):
        tiny(tokens, clip, r)


@pytest.mark.parametrize("shape", [(2, 5, 4, 6), (1, 3, 1, 1), (3, 4, 5, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsampling_by_matmul_is_the_transposed_convolution(shape, channels_last: bool):
    B, c_in, H, W = shape
    torch.manual_seed(0)
    layer = Upsample(c_in, 7).double()
    x = torch.randn(B, c_in, H, W, dtype=torch.float64)
    if channels_last:  # as the denoiser's features travel
        x = x.contiguous(memory_format=torch.channels_last)
    expected = F.conv_transpose2d(x, layer.weight, layer.bias, stride=2, padding=1)
    out = upsample_by_matmul(x, layer.weight, layer.bias)
    assert out.shape == (B, 7, 2 * H, 2 * W)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)  # on a CPU, the library's


def test_each_sample_is_independent_of_its_batch(tiny: Denoiser):
    tokens, clip, r = inputs(3, 8, 12)
    with torch.inference_mode():
        batched = tiny(tokens, clip, r)
        alone = tiny(tokens[1:2], clip[1:2], r[1:2])
    torch.testing.assert_close(batched[1:2], alone, rtol=1e-5, atol=1e-5)


def test_condition_and_noise_level_change_the_logits(tiny: Denoiser):
    tokens, clip, r = inputs(1, 8, 8)
    with torch.inference_mode():
        base = tiny(tokens, clip, r)
        assert not torch.allclose(base, tiny(tokens, torch.zeros_like(clip), r))
        assert not torch.allclose(base, tiny(tokens, clip, 1 - r))


def test_spatial_map_of_one_vector_equals_the_vector_condition(tiny: Denoiser):
    tokens, clip, r = inputs(2, 8, 12)
    with torch.inference_mode():
        flat = tiny(tokens, clip, r)
        for h, w in [(8, 12), (2, 3), (5, 7)]:
            spatial = tiny(tokens, clip[:, :, None, None].expand(-1, -1, h, w), r)
            torch.testing.assert_close(spatial, flat, rtol=1e-5, atol=1e-5)


def test_spatial_condition_acts_locally(tiny: Denoiser):
    tokens, clip, r = inputs(1, 8, 16)
    other = torch.randn(1, TINY.c_clip, generator=torch.Generator().manual_seed(1))
    halves = torch.cat(
        [clip[:, :, None, None].expand(-1, -1, 4, 4), other[:, :, None, None].expand(-1, -1, 4, 4)], 3
    )
    with torch.inference_mode():
        mixed, left, right = tiny(tokens, halves, r), tiny(tokens, clip, r), tiny(tokens, other, r)
    assert mixed.shape == (1, TINY.num_labels, 8, 16)
    assert (mixed[..., :2] - left[..., :2]).abs().max() < (mixed[..., :2] - right[..., :2]).abs().max()
    assert (mixed[..., -2:] - right[..., -2:]).abs().max() < (mixed[..., -2:] - left[..., -2:]).abs().max()


def test_r_embedding_is_sin_then_cos_of_the_scaled_noise_level(tiny: Denoiser):
    emb = tiny.r_embedding(torch.tensor([1.0, 0.0]))
    assert emb.shape == (2, TINY.c_r)
    half = TINY.c_r // 2
    torch.testing.assert_close(emb[0], torch.cat([torch.zeros(half), torch.ones(half)]), atol=1e-3, rtol=0)
    torch.testing.assert_close(emb[1, 0], torch.sin(torch.tensor(10000.0)))
    torch.testing.assert_close(emb[1, half - 1], torch.sin(torch.tensor(1.0)))


def test_initialisation_follows_the_paper_code():
    torch.manual_seed(0)
    model = Denoiser(TINY)
    blocks = [
        b for level in [*model.down_blocks, *model.up_blocks] for b in level if hasattr(b, "cond_mapper")
    ]
    assert len(blocks) == sum(TINY.down_levels) + sum(TINY.up_levels)
    assert all(torch.all(b.gamma == 1e-6) for b in blocks)
    # last Linear: default init bound 1/sqrt(fan_in) times sqrt(1/sum(levels))
    bound = (1 / (4 * TINY.c_hidden)) ** 0.5 * (1 / sum(TINY.down_levels)) ** 0.5
    deepest = model.down_blocks[-1][-1].channelwise[-1].weight
    assert deepest.abs().max() <= bound
    assert deepest.abs().max() > 0.5 * bound
