import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.config import PAELLA_V1, VQGANConfig
from model.vqgan import VQGAN, AttnBlock

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# f8 like v1, at a width GroupNorm(32) allows; attention where the config's resolution halves to 8
TINY = VQGANConfig(
    ch=32,
    ch_mult=(1, 1, 1, 2),
    num_res_blocks=1,
    attn_resolutions=(8,),
    z_channels=8,
    embed_dim=8,
    n_embed=16,
    resolution=64,
)


@pytest.fixture(scope="module")
def tiny() -> VQGAN:
    torch.manual_seed(0)
    return VQGAN(TINY).eval()


def test_full_size_state_dict_matches_the_published_names_and_shapes():
    expected = json.loads((FIXTURES / "vqgan-f8-v1.keys.json").read_text())
    with torch.device("meta"):
        model = VQGAN(PAELLA_V1.vqgan)
    state = model.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == expected["tensors"]
    assert sum(v.numel() for v in state.values()) == expected["n_params"]


def test_attention_levels_count_from_the_config_resolution():
    names = VQGAN(TINY).state_dict().keys()
    with_attn = {n.split(".attn.")[0] for n in names if ".attn." in n}
    assert with_attn == {"encoder.down.3", "decoder.up.3"}
    assert sum(".attn." in n and n.endswith(".q.weight") for n in names) == 1 + 2  # one per ResnetBlock


@pytest.mark.parametrize("size", [(16, 24), (40, 8), (32, 32)])
def test_encode_decode_shapes_on_any_grid(tiny: VQGAN, size: tuple[int, int]):
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        indices = tiny.encode(images)
        decoded = tiny.decode(indices)
    assert indices.shape == (2, size[0] // 8, size[1] // 8) and indices.dtype == torch.int64
    assert int(indices.min()) >= 0 and int(indices.max()) < TINY.n_embed
    assert decoded.shape == (2, 3, *size)
    assert decoded.min() >= 0 and decoded.max() <= 1


def test_encode_is_the_argmax_of_the_code_logits_and_deterministic(tiny: VQGAN):
    images = torch.rand(3, 3, 16, 24, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        logits = tiny.code_logits(images)
        assert logits.shape == (3, TINY.n_embed, 2, 3)
        torch.testing.assert_close(tiny.encode(images), logits.argmax(1), rtol=0, atol=0)
        torch.testing.assert_close(tiny.encode(images), tiny.encode(images), rtol=0, atol=0)
        assert logits.std(dim=(0, 2, 3)).min() > 0


def test_a_one_hot_mix_of_the_codebook_decodes_like_the_indices(tiny: VQGAN):
    indices = torch.randint(0, TINY.n_embed, (2, 3, 2), generator=torch.Generator().manual_seed(2))
    one_hot = F.one_hot(indices, TINY.n_embed).permute(0, 3, 1, 2).float()  # (B, n_embed, h, w)
    with torch.inference_mode():
        z = tiny.quantize.mix(one_hot)
        torch.testing.assert_close(z, tiny.quantize.embed(indices).permute(0, 3, 1, 2))
        torch.testing.assert_close(tiny.decode_embeddings(z), tiny.decode(indices))


def test_gradients_flow_from_pixels_to_the_code_logits(tiny: VQGAN):
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    logits = tiny.code_logits(images)
    soft = F.gumbel_softmax(logits, tau=1.0, hard=True, dim=1)
    loss = (tiny.decode_embeddings(tiny.quantize.mix(soft)) - images).abs().mean()
    loss.backward()
    assert tiny.quantize.proj.weight.grad is not None and tiny.quantize.proj.weight.grad.abs().sum() > 0
    tiny.zero_grad(set_to_none=True)


def test_attention_is_softmax_of_scaled_dot_products():
    torch.manual_seed(4)
    block = AttnBlock(32)
    x = torch.randn(2, 32, 3, 5)
    h = block.norm(x)
    q, k, v = (conv(h).flatten(2) for conv in (block.q, block.k, block.v))  # (B, C, HW)
    weights = torch.softmax(q.transpose(1, 2) @ k * 32**-0.5, dim=-1)  # (B, HW_q, HW_k)
    expected = x + block.proj_out((v @ weights.transpose(1, 2)).reshape(2, 32, 3, 5))
    torch.testing.assert_close(block(x), expected)


def test_channel_norm_keeps_the_v1_layout_and_no_statistic_spans_positions() -> None:
    import dataclasses

    from model.vqgan import ChannelNorm

    group, channel = VQGAN(TINY), VQGAN(dataclasses.replace(TINY, norm="channel"))
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(group) == shapes(channel)  # same keys and shapes: the same files load either way
    assert any(isinstance(m, ChannelNorm) for m in channel.modules())
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in channel.modules())
    norm = ChannelNorm(32)
    x = torch.randn(2, 32, 8, 8)
    spiked = x.clone()
    spiked[:, :, 3, 3] *= 100  # a droplet at one position
    out, out_spiked = norm(x), norm(spiked)
    keep = torch.ones(8, 8, dtype=torch.bool)
    keep[3, 3] = False
    torch.testing.assert_close(out[..., keep], out_spiked[..., keep])  # elsewhere nothing moves
    reference = F.layer_norm(x.permute(0, 2, 3, 1), (32,), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, reference)
    gn = torch.nn.GroupNorm(32 // 4, 32)
    assert not torch.allclose(gn(x)[..., keep], gn(spiked)[..., keep])  # GroupNorm: it moves everywhere
