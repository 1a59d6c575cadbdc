import pytest
import torch

from model.conditioning import interpolate, region_map
from model.ops import Region


def test_slerp_keeps_the_arc_and_lerp_the_chord():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    t = torch.tensor([[0.0], [0.5], [1.0]])
    assert torch.allclose(interpolate(a, b, t, "slerp")[1], torch.tensor([0.5**0.5, 0.5**0.5]))
    assert torch.allclose(interpolate(a, b, t, "lerp")[1], torch.tensor([0.5, 0.5]))
    assert torch.equal(interpolate(a, 2 * a, t, "slerp"), torch.lerp(a, 2 * a, t))  # parallel: the chord
    for mode in ("lerp", "slerp"):
        ends = interpolate(a, b, torch.tensor([[0.0], [1.0]]), mode)  # type: ignore[arg-type]
        assert torch.equal(ends[0], a) and torch.equal(ends[1], b)


def test_region_maps_blend_covering_regions_and_zero_elsewhere():
    red, blue = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    half = region_map(
        [Region("r", (0.0, 0.0, 0.5, 1.0)), Region("b", (0.5, 0.0, 1.0, 1.0))],
        torch.stack([red, blue]),
        (4, 4),
    )
    assert half.shape == (16, 4, 4)
    expected = torch.zeros(4, 4, 16)
    expected[:, :2], expected[:, 2:] = red, blue
    assert torch.allclose(half.permute(1, 2, 0), expected, atol=1e-6)
    blend = region_map(
        [Region("r"), Region("b", (0.0, 0.0, 0.5, 0.5), weight=3.0)], torch.stack([red, blue]), (4, 4)
    )
    expected[:] = red
    expected[:2, :2] = (red + 3 * blue) / 4
    assert torch.allclose(blend.permute(1, 2, 0), expected, atol=1e-6)
    part = region_map([Region("b", (0.25, 0.5, 0.75, 1.0))], blue[None], (4, 4))
    expected.zero_()
    expected[2:, 1:3] = blue
    assert torch.allclose(part.permute(1, 2, 0), expected, atol=1e-6)


def test_regions_check_their_box_and_weight():
    with pytest.raises(ValueError, match="positive"):
        Region("a", weight=0.0)
    with pytest.raises(ValueError, match="left < right"):
        Region("a", (0.5, 0.0, 0.5, 1.0))
    with pytest.raises(ValueError, match="within"):
        Region("a", (0.0, 0.0, 1.5, 1.0))
