import numpy as np
import pytest
import torch
from PIL import Image

from model.config import SamplerConfig
from model.pipeline import Pipeline, Region, interpolate
from model.sampler import sample


@pytest.fixture(scope="module")
def pipe(tiny_model_dir) -> Pipeline:
    return Pipeline.from_folder(tiny_model_dir)


@pytest.fixture(scope="module")
def pictures() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]


def forward_batches(pipe: Pipeline) -> list[int]:
    """Record the batch size of every denoiser forward."""
    calls: list[int] = []
    pipe.denoiser.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    return calls


def test_from_folder_builds_frozen_modules_in_eval_mode(pipe):
    assert pipe.size_multiple == 16 and pipe.config.image_size == 32
    for module in (pipe.denoiser, pipe.vqgan, pipe.clip):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    assert pipe.clip.cache_size > 0


def test_a_seed_decides_its_image_whatever_the_batch(pipe):
    prompts = ["a red circle", "a blue square", "a green triangle above a yellow circle"]
    batch = pipe.generate_tokens(prompts, seeds=[3, 4, 5], width=32, height=48)
    assert batch.shape == (3, 6, 4) and batch.dtype == torch.int64
    for i in range(3):
        alone = pipe.generate_tokens(prompts[i : i + 1], seeds=[3 + i], width=32, height=48)
        assert torch.equal(alone[0], batch[i])
    again = pipe.generate_tokens(prompts[::-1], seeds=[5, 4, 3], width=32, height=48)
    assert torch.equal(again.flip(0), batch)
    other = pipe.generate_tokens(prompts, seeds=[6, 7, 8], width=32, height=48)
    assert (other != batch).flatten(1).any(1).all()


def test_generate_returns_rgb_images_with_one_batched_forward_per_step(pipe):
    calls = forward_batches(pipe)
    images = pipe.generate(["a red circle", "a blue square"], seeds=[1, 2], width=48, height=32)
    assert [im.size for im in images] == [(48, 32), (48, 32)] and all(im.mode == "RGB" for im in images)
    assert calls == [4] * pipe.config.sampler.steps  # guidance on: cond and uncond in one batch of 2B
    alone = pipe.generate(["a blue square"], seeds=[2], width=48, height=32)
    assert np.array_equal(np.asarray(alone[0]), np.asarray(images[1]))  # byte-exact whatever the batch
    calls.clear()
    pipe.generate_tokens(["a red circle"], seeds=[1], width=32, height=32, sampler=SamplerConfig(steps=3))
    assert calls == [1] * 3  # guidance off: one plain forward per step
    pipe.denoiser._forward_hooks.clear()


def test_negative_prompts_replace_the_zero_uncond(pipe):
    prompts = ["a red circle", "a red circle"]
    plain = pipe.generate_tokens(prompts, seeds=[1, 2], width=32, height=32)
    mixed = pipe.generate_tokens(
        prompts, seeds=[1, 2], width=32, height=32, negative_prompts=[None, "a blue square"]
    )
    assert torch.equal(mixed[0], plain[0]) and not torch.equal(mixed[1], plain[1])
    cond = pipe.clip.encode_text(prompts)
    uncond = torch.stack([torch.zeros(16), pipe.clip.encode_text(["a blue square"])[0]])
    seeds, config = torch.tensor([1, 2]), pipe.config.sampler
    expected = sample(
        pipe.denoiser, cond, seeds=seeds, grid=(4, 4), config=config, num_labels=64, uncond=uncond
    )
    assert torch.equal(mixed, expected)


def test_inpainting_repaints_only_tokens_touching_the_mask(pipe, pictures):
    masks = [np.zeros((32, 32), dtype=bool) for _ in range(2)]
    masks[0][9, 17] = True  # one pixel: token (1, 2)
    masks[1][:, 16:] = True  # the right half
    out = pipe.inpaint_tokens(pictures[:2], masks, ["a red circle"] * 2, seeds=[1, 2])
    tokens = pipe.encode(pictures[:2])
    repaint = torch.zeros(2, 4, 4, dtype=torch.bool)
    repaint[0, 1, 2] = True
    repaint[1, :, 2:] = True
    assert torch.equal(out[~repaint], tokens[~repaint])
    assert (out[repaint] != tokens[repaint]).any()
    images = pipe.inpaint([Image.fromarray(p) for p in pictures[:2]], masks, ["a"] * 2, seeds=[1, 2])
    assert images[0].size == (32, 32)


def test_outpainting_keeps_the_image_tokens_in_place(pipe, pictures):
    out = pipe.outpaint_tokens(
        pictures[:2], ["a blue square"] * 2, left=16, right=0, up=8, down=8, seeds=[1, 2]
    )
    assert out.shape == (2, 6, 6)
    assert torch.equal(out[:, 1:5, 2:6], pipe.encode(pictures[:2]))
    images = pipe.outpaint(pictures[:1], ["a"], left=16, right=0, up=8, down=8, seeds=[1])
    assert images[0].size == (48, 48)
    with pytest.raises(ValueError):
        pipe.outpaint_tokens(pictures[:1], ["a"], left=4, right=0, up=0, down=0, seeds=[1])


def test_structural_edit_at_strength_zero_returns_the_input_tokens(pipe, pictures):
    tokens = pipe.encode(pictures)
    kept = pipe.structural_edit_tokens(pictures, ["a blue square"] * 3, strength=0.0, seeds=[1, 2, 3])
    assert torch.equal(kept, tokens)
    calls = forward_batches(pipe)
    for strength, steps_run in [(0.0, 0), (0.25, 1), (0.5, 2), (1.0, 4)]:  # from step round((1 - s) * 4)
        calls.clear()
        pipe.structural_edit_tokens(pictures, ["a blue square"] * 3, strength=strength, seeds=[1, 2, 3])
        assert calls == [6] * steps_run
    pipe.denoiser._forward_hooks.clear()
    assert [im.size for im in pipe.structural_edit(pictures[:1], ["a"], strength=0.0, seeds=[1])] == [
        (32, 32)
    ]


def test_variations_condition_on_the_clip_image_embedding(pipe, pictures):
    out = pipe.variations_tokens(pictures[:2], seeds=[1, 2], width=32, height=32)
    cond = pipe.clip.encode_image(pipe.pixels(pictures[:2]))
    config = pipe.config.sampler
    assert torch.equal(
        out,
        sample(pipe.denoiser, cond, seeds=torch.tensor([1, 2]), grid=(4, 4), config=config, num_labels=64),
    )
    big = np.repeat(np.repeat(pictures[2], 2, axis=0), 2, axis=1)  # 64 x 64: pictures may differ in size
    mixed = pipe.variations_tokens([pictures[0], big], seeds=[1, 2], width=32, height=32)
    assert torch.equal(mixed[0], out[0])
    alone = pipe.variations_tokens([big], seeds=[2], width=32, height=32)
    assert torch.equal(mixed[1], alone[0])


@pytest.mark.parametrize("mode", ["lerp", "slerp"])
def test_interpolation_runs_from_start_to_end_with_one_seed(pipe, pictures, mode):
    conds = pipe.interpolation_conditions("a red circle", pictures[0], frames=5, mode=mode)
    assert torch.equal(conds[0], pipe.clip.encode_text(["a red circle"])[0])
    assert torch.equal(conds[-1], pipe.clip.encode_image(pipe.pixels(pictures[:1]))[0])
    some = pipe.interpolation_conditions(
        "a red circle", pictures[0], frames=5, mode=mode, frame_indices=[3, 1]
    )
    assert torch.equal(some, conds[[3, 1]])
    frames = pipe.interpolate_tokens(
        "a red circle", "a blue square", frames=4, seed=9, mode=mode, width=32, height=32
    )
    subset = pipe.interpolate_tokens(
        "a red circle", "a blue square", frames=4, seed=9, mode=mode, width=32, height=32, frame_indices=[2]
    )
    assert torch.equal(subset[0], frames[2])
    ends = pipe.generate_tokens(["a red circle", "a blue square"], seeds=[9, 9], width=32, height=32)
    assert torch.equal(frames[[0, 3]], ends)


def test_slerp_keeps_the_arc_and_lerp_the_chord():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    t = torch.tensor([[0.0], [0.5], [1.0]])
    assert torch.allclose(interpolate(a, b, t, "slerp")[1], torch.tensor([0.5**0.5, 0.5**0.5]))
    assert torch.allclose(interpolate(a, b, t, "lerp")[1], torch.tensor([0.5, 0.5]))
    assert torch.equal(interpolate(a, 2 * a, t, "slerp"), torch.lerp(a, 2 * a, t))  # parallel: the chord


def test_region_maps_blend_covering_regions_and_zero_elsewhere(pipe):
    red, blue = pipe.clip.encode_text(["a red circle", "a blue square"])
    layouts = [
        [Region("a red circle", (0.0, 0.0, 0.5, 1.0)), Region("a blue square", (0.5, 0.0, 1.0, 1.0))],
        [Region("a red circle"), Region("a blue square", (0.0, 0.0, 0.5, 0.5), weight=3.0)],
        [Region("a blue square", (0.25, 0.5, 0.75, 1.0))],
    ]
    maps = pipe.region_maps(layouts, (4, 4))  # (B, c, h, w)
    assert maps.shape == (3, 16, 4, 4)
    expected = torch.zeros(3, 4, 4, 16)
    expected[0, :, :2], expected[0, :, 2:] = red, blue
    expected[1] = red
    expected[1, :2, :2] = (red + 3 * blue) / 4
    expected[2, 2:, 1:3] = blue
    assert torch.allclose(maps.permute(0, 2, 3, 1), expected, atol=1e-6)
    out = pipe.multi_condition(layouts, seeds=[1, 2, 3], width=32, height=32)
    assert len(out) == 3 and out[0].size == (32, 32)
    with pytest.raises(ValueError, match="positive"):
        pipe.region_maps([[Region("a", weight=0.0)]], (4, 4))


def test_inputs_are_checked(pipe, pictures):
    with pytest.raises(ValueError, match="multiples of 16"):
        pipe.generate_tokens(["a"], seeds=[1], width=40, height=32)
    with pytest.raises(ValueError, match="at least 32"):
        pipe.generate_tokens(["a"], seeds=[1], width=16, height=32)
    with pytest.raises(ValueError, match="seeds"):
        pipe.generate_tokens(["a", "b"], seeds=[1], width=32, height=32)
    with pytest.raises(ValueError, match="one size"):
        pipe.encode([pictures[0], np.zeros((16, 32, 3), dtype=np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        pipe.encode([pictures[0].astype(np.float32)])


def test_seeds_wrap_uint64_and_warmup_runs(pipe):
    assert pipe.seed_tensor([0, 2**63, 2**64 - 1, -1]).tolist() == [0, -(2**63), -1, -1]
    pipe.warmup([1, 2], width=32, height=32)
