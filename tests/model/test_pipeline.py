import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import SamplerConfig
from model.folder import read_extra
from model.graphs import BucketGraphs
from model.ops import (
    Composition,
    Draw,
    Generate,
    Inpaint,
    Interpolation,
    Mask,
    Outpaint,
    Picture,
    Region,
    StructuralEdit,
    Variation,
)
from model.pipeline import Pipeline
from model.weights import read_folder, write_folder, write_random_folder


@pytest.fixture(scope="module")
def pipe(tiny_model_dir) -> Pipeline:
    return Pipeline.from_folder(tiny_model_dir)


@pytest.fixture(scope="module")
def pictures() -> list[Picture]:
    rng = np.random.default_rng(0)
    return [Picture.from_array(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]


def draws(ops, seeds, sampler=None, pipe=None):
    config = sampler or pipe.config.sampler
    return [Draw(op, seed, config) for op, seed in zip(ops, seeds, strict=True)]


def forward_batches(pipe: Pipeline) -> list[int]:
    """Record the batch size of every denoiser forward."""
    calls: list[int] = []
    pipe.denoiser.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    return calls


def test_from_folder_builds_frozen_modules_in_eval_mode(pipe):
    assert pipe.config.size_multiple == 16 and pipe.config.image_size == 32
    for module in (pipe.denoiser, pipe.vqgan, pipe.clip):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    assert pipe.clip.cache_size > 0
    assert pipe.exact_vqgan  # on the CPU the VQGAN runs image by image


def test_a_seed_decides_its_image_whatever_the_batch(pipe):
    prompts = ["a red circle", "a blue square", "a green triangle above a yellow circle"]
    ops = [Generate(p, 32, 48) for p in prompts]
    batch = pipe.tokens(draws(ops, [3, 4, 5], pipe=pipe))
    assert batch.shape == (3, 6, 4) and batch.dtype == torch.int64
    for i in range(3):
        alone = pipe.tokens(draws(ops[i : i + 1], [3 + i], pipe=pipe))
        assert torch.equal(alone[0], batch[i])
    again = pipe.tokens(draws(ops[::-1], [5, 4, 3], pipe=pipe))
    assert torch.equal(again.flip(0), batch)
    other = pipe.tokens(draws(ops, [6, 7, 8], pipe=pipe))
    assert (other != batch).flatten(1).any(1).all()


def test_images_come_from_one_batched_forward_per_step(pipe):
    calls = forward_batches(pipe)
    ops = [Generate("a red circle", 48, 32), Generate("a blue square", 48, 32)]
    images = pipe.images(draws(ops, [1, 2], pipe=pipe))
    assert [im.size for im in images] == [(48, 32), (48, 32)] and all(im.mode == "RGB" for im in images)
    assert calls == [4] * pipe.config.sampler.steps  # guidance on: cond and uncond in one batch of 2B
    alone = pipe.images(draws(ops[1:], [2], pipe=pipe))
    assert np.array_equal(np.asarray(alone[0]), np.asarray(images[1]))  # byte-exact whatever the batch
    calls.clear()
    pipe.tokens(draws(ops[:1], [1], SamplerConfig(steps=3)))
    assert calls == [1] * 3  # guidance off: one plain forward per step
    pipe.denoiser._forward_hooks.clear()


def test_negative_prompts_replace_the_zero_uncond(pipe):
    ops = [
        Generate("a red circle", 32, 32),
        Generate("a red circle", 32, 32, negative_prompt="a blue square"),
    ]
    rows = pipe.rows(draws(ops, [1, 2], pipe=pipe))
    assert torch.equal(rows.uncond[0], torch.zeros(16))
    assert torch.equal(rows.uncond[1], pipe.clip.encode_text(["a blue square"])[0])
    plain = pipe.tokens(draws([ops[0], ops[0]], [1, 2], pipe=pipe))
    mixed = pipe.tokens(draws(ops, [1, 2], pipe=pipe))
    assert torch.equal(mixed[0], plain[0]) and not torch.equal(mixed[1], plain[1])


def test_inpainting_repaints_only_tokens_touching_the_mask(pipe, pictures):
    masks = [np.zeros((32, 32), dtype=bool) for _ in range(2)]
    masks[0][9, 17] = True  # one pixel: token (1, 2)
    masks[1][:, 16:] = True  # the right half
    ops = [Inpaint(p, Mask.from_array(m), "a red circle") for p, m in zip(pictures, masks, strict=False)]
    out = pipe.tokens(draws(ops, [1, 2], pipe=pipe))
    tokens = pipe.encode(pictures[:2])
    repaint = torch.zeros(2, 4, 4, dtype=torch.bool)
    repaint[0, 1, 2] = True
    repaint[1, :, 2:] = True
    assert torch.equal(out[~repaint], tokens[~repaint])
    assert (out[repaint] != tokens[repaint]).any()


def test_outpainting_keeps_the_image_tokens_in_place(pipe, pictures):
    ops = [Outpaint(p, "a blue square", left=16, up=8, down=8) for p in pictures[:2]]
    assert ops[0].size == (48, 48)
    out = pipe.tokens(draws(ops, [1, 2], pipe=pipe))
    assert out.shape == (2, 6, 6)
    assert torch.equal(out[:, 1:5, 2:6], pipe.encode(pictures[:2]))
    with pytest.raises(ValueError, match="multiples of 8"):
        pipe.tokens(draws([Outpaint(pictures[0], "a", left=4, right=12)], [1], pipe=pipe))


def test_structural_edit_at_strength_zero_returns_the_input_tokens(pipe, pictures):
    tokens = pipe.encode(pictures)
    kept = pipe.tokens(
        draws([StructuralEdit(p, "a blue square", 0.0) for p in pictures], [1, 2, 3], pipe=pipe)
    )
    assert torch.equal(kept, tokens)
    calls = forward_batches(pipe)
    for strength, steps_run in [(0.0, 0), (0.25, 1), (0.5, 2), (1.0, 4)]:  # from step round((1 - s) * 4)
        calls.clear()
        pipe.tokens(
            draws([StructuralEdit(p, "a blue square", strength) for p in pictures], [1, 2, 3], pipe=pipe)
        )
        assert calls == [6] * steps_run
    pipe.denoiser._forward_hooks.clear()


def test_variations_condition_on_the_clip_image_embedding(pipe, pictures):
    rows = pipe.rows(draws([Variation(p, 32, 32) for p in pictures[:2]], [1, 2], pipe=pipe))
    assert torch.equal(rows.cond, pipe.clip.encode_image(pipe.pixels(pictures[:2])))
    out = pipe.tokens(draws([Variation(p, 32, 32) for p in pictures[:2]], [1, 2], pipe=pipe))
    big = Picture.from_array(np.repeat(np.repeat(pictures[2].array(), 2, axis=0), 2, axis=1))  # any size
    mixed = pipe.tokens(draws([Variation(pictures[0], 32, 32), Variation(big, 32, 32)], [1, 2], pipe=pipe))
    assert torch.equal(mixed[0], out[0])
    alone = pipe.tokens(draws([Variation(big, 32, 32)], [2], pipe=pipe))
    assert torch.equal(mixed[1], alone[0])


def test_variations_run_on_the_image_denoiser_where_the_folder_has_one(
    tmp_path, tiny_model_dir, pipe, pictures
):
    config, tensors = read_folder(tiny_model_dir)
    vocab = {"vocab.json": read_extra(tiny_model_dir, "vocab.json")}
    words = json.loads(vocab["vocab.json"])
    other = read_folder(write_random_folder(tmp_path / "o", config, words, seed=1), ["denoiser"])[1][
        "denoiser"
    ]
    with_image = write_folder(tmp_path / "a", config, {**tensors, "image_denoiser": other}, extra_files=vocab)
    swapped = write_folder(tmp_path / "b", config, {**tensors, "denoiser": other}, extra_files=vocab)
    image_pipe = Pipeline.from_folder(with_image)
    assert pipe.image_denoiser is None and image_pipe.image_denoiser is not None
    assert not image_pipe.image_denoiser.training
    variations = draws([Variation(p, 32, 32) for p in pictures[:2]], [1, 2], pipe=pipe)
    on_image = image_pipe.tokens(variations)
    assert torch.equal(on_image, Pipeline.from_folder(swapped).tokens(variations))
    assert not torch.equal(on_image, pipe.tokens(variations))
    rendered, _ = image_pipe.render(variations, [(), ()])  # the service's path takes the same network
    assert [np.asarray(r).tobytes() for r in rendered] == [
        np.asarray(r).tobytes() for r in image_pipe.decode(on_image)
    ]
    generations = draws([Generate("a red circle", 32, 32)], [1], pipe=pipe)
    assert torch.equal(image_pipe.tokens(generations), pipe.tokens(generations))
    with pytest.raises(ValueError, match="batch them apart"):
        image_pipe.tokens(variations + generations)


@pytest.mark.parametrize("mode", ["lerp", "slerp"])
def test_interpolation_runs_from_start_to_end_with_one_seed(pipe, pictures, mode):
    op = Interpolation("a red circle", pictures[0], 5, 32, 32, mode=mode)
    frames = [Draw(op, 9, pipe.config.sampler, i) for i in range(5)]
    rows = pipe.rows(frames)
    assert torch.equal(rows.cond[0], pipe.clip.encode_text(["a red circle"])[0])
    assert torch.equal(rows.cond[-1], pipe.clip.encode_image(pipe.pixels(pictures[:1]))[0])
    assert not torch.equal(rows.cond[2], rows.cond[0]) and not torch.equal(rows.cond[2], rows.cond[4])
    texts = Interpolation("a red circle", "a blue square", 4, 32, 32, mode=mode)
    tokens = pipe.tokens([Draw(texts, 9, pipe.config.sampler, i) for i in range(4)])
    subset = pipe.tokens([Draw(texts, 9, pipe.config.sampler, 2)])
    assert torch.equal(subset[0], tokens[2])
    ends = pipe.tokens(
        draws([Generate("a red circle", 32, 32), Generate("a blue square", 32, 32)], [9, 9], pipe=pipe)
    )
    assert torch.equal(tokens[[0, 3]], ends)


def test_compositions_condition_on_region_maps(pipe):
    red, blue = pipe.clip.encode_text(["a red circle", "a blue square"])
    op = Composition(
        (Region("a red circle", (0.0, 0.0, 0.5, 1.0)), Region("a blue square", (0.5, 0.0, 1.0, 1.0))), 32, 32
    )
    rows = pipe.rows(draws([op, Generate("a red circle", 32, 32)], [1, 2], pipe=pipe))
    assert rows.cond.shape == (2, 16, 4, 4)
    assert torch.allclose(rows.cond[0, :, :, :2], red[:, None, None].expand(-1, 4, 2))
    assert torch.allclose(rows.cond[0, :, :, 2:], blue[:, None, None].expand(-1, 4, 2))
    assert torch.equal(rows.cond[1], red[:, None, None].expand(-1, 4, 4))  # a pooled row among maps
    assert torch.equal(rows.uncond, torch.zeros(2, 16, 4, 4))
    images = pipe.images(draws([op], [1], pipe=pipe))
    assert images[0].size == (32, 32)


def test_a_mixed_batch_gives_each_image_the_tokens_it_gets_alone(pipe, pictures):
    """Every pooled operation, each with its own knobs, in one batch of one canvas and step count."""
    base = pipe.config.sampler
    mask = np.zeros((32, 32), dtype=bool)
    mask[:16] = True
    wide = Picture.from_array(pictures[1].array()[:16])  # 32 x 16, outpainted to 32 x 32
    batch = [
        Draw(Generate("a red circle", 32, 32), 1, base),
        Draw(
            Generate("a blue square", 32, 32, negative_prompt="a red circle"),
            2,
            base.replace(guidance_scale=5.0),
        ),
        Draw(
            Inpaint(pictures[0], Mask.from_array(mask), "a green triangle above a yellow circle"),
            3,
            base.replace(temp_range=(0.5, 0.5)),
        ),
        Draw(
            Outpaint(wide, "a blue square", down=16),
            4,
            base.replace(typical_filtering=False, typical_mass=0.0),
        ),
        Draw(Variation(pictures[2], 32, 32), 5, base.replace(guidance_scale=-1.0)),
        Draw(Interpolation("a red circle", "a blue square", 3, 32, 32), 6, base, 1),
        Draw(StructuralEdit(pictures[0], "a red circle", 0.5), 7, base.replace(typical_mass=0.5)),
        Draw(Generate("a red circle", 32, 32), 8, base.replace(temp_range=(0.0, 0.0), renoise_mode="rand")),
    ]
    together = pipe.tokens(batch)
    for i, d in enumerate(batch):
        assert torch.equal(pipe.tokens([d])[0], together[i]), type(d.op).__name__
    with pytest.raises(ValueError, match="one canvas"):
        pipe.tokens([batch[0], Draw(Generate("a", 48, 32), 1, base)])
    with pytest.raises(ValueError, match="one step count"):
        pipe.tokens([batch[0], Draw(Generate("a", 32, 32), 1, base.replace(steps=2))])


def test_inputs_are_checked(pipe, pictures):
    with pytest.raises(ValueError, match="multiples of 16"):
        pipe.tokens(draws([Generate("a", 40, 32)], [1], pipe=pipe))
    with pytest.raises(ValueError, match="at least 32"):
        pipe.tokens(draws([Generate("a", 16, 32)], [1], pipe=pipe))
    small = Picture.from_array(np.zeros((16, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="one size"):
        pipe.encode([pictures[0], small])
    with pytest.raises(ValueError, match="uint8"):
        Picture.from_array(pictures[0].array().astype(np.float32))
    with pytest.raises(ValueError, match="differ in size"):
        Inpaint(pictures[0], Mask.from_array(np.zeros((16, 32), dtype=bool)), "a")


def test_seeds_wrap_uint64_and_warmup_runs(pipe):
    assert pipe.seed_tensor([0, 2**63, 2**64 - 1, -1]).tolist() == [0, -(2**63), -1, -1]
    assert pipe.batch_sizes(6) == [1, 2, 4, 6]
    seconds = pipe.warmup(2, width=32, height=32)
    assert list(seconds) == [1, 2] and all(s > 0 for s in seconds.values())


def test_batches_padded_to_a_graph_bucket_give_the_same_tokens(tiny_model_dir):
    """The fast path's padding and static buffers, uncaptured on the CPU: every row as in eager sampling."""
    pipe = Pipeline.from_folder(tiny_model_dir)
    eager = [
        pipe.tokens(draws([Generate(f"a red circle {i}", 32, 32)] * n, list(range(n)), pipe=pipe))
        for i, n in enumerate((3, 1, 5))
    ]
    pipe.accelerate((2, 4), compile=False, capture=False)
    padded = [
        pipe.tokens(draws([Generate(f"a red circle {i}", 32, 32)] * n, list(range(n)), pipe=pipe))
        for i, n in enumerate((3, 1, 5))
    ]
    for a, b in zip(eager, padded, strict=True):
        assert torch.equal(a, b)
    assert pipe._sample is not None and len(pipe._sample) == 2  # buckets 4 and 2; five rows: unpadded
    assert pipe.batch_sizes(6) == [2, 4, 6]


def test_padded_encoders_give_edits_and_variations_the_same_tokens(tiny_model_dir, pictures):
    """The pictures edits and variations bring go through the fast path's encoder and image tower buckets
    (padded, uncaptured on the CPU): the tokens are eager sampling's."""
    pipe = Pipeline.from_folder(tiny_model_dir)
    mask = np.zeros((32, 32), dtype=bool)
    mask[8:24, 8:24] = True
    ops = [
        Inpaint(pictures[0], Mask.from_array(mask), "a red circle"),
        Variation(pictures[1], 32, 32),
        Inpaint(pictures[2], Mask.from_array(mask), "a blue square"),
    ]
    eager = pipe.tokens(draws(ops, [1, 2, 3], pipe=pipe))
    pipe.accelerate((2, 4), compile=False, capture=False)
    padded = pipe.tokens(draws(ops, [1, 2, 3], pipe=pipe))
    assert torch.equal(eager, padded)
    assert len(pipe._encode) == 1 and len(pipe.clip.image_tower) == 1  # two pictures in 2, one in 2
    seconds = pipe.warmup(4, width=32, height=32)
    assert list(seconds) == [2, 4]
    assert len(pipe._encode) == 2 and len(pipe.clip.image_tower) == 2  # every bucket, ahead of traffic
    small = Picture.from_array(pictures[0].array()[:24])  # an outpainting's picture: not the canvas
    pipe.encode([small])
    assert len(pipe._encode) == 2  # encoded eagerly, no graph captured for it mid-traffic


def test_warmup_reaches_every_text_bucket_a_batch_can_use(tiny_model_dir):
    """Distinct prompts per batch size, and up to twice the largest (negative prompts): no text tower graph
    is left to be captured under traffic; the prompt cache is left empty."""
    pipe = Pipeline.from_folder(tiny_model_dir)
    pipe.accelerate((1, 2, 4, 8, 16), compile=False, capture=False)
    pipe.warmup(4, width=32, height=32)
    tower = pipe.clip.text_tower
    assert isinstance(tower, BucketGraphs)
    assert sorted(key[0] for key in tower._graphs) == [1, 2, 4, 8]
    assert pipe.clip._cache == {}
    pipe.accelerate((1, 2, 4, 8, 16), compile=False, capture=False)
    pipe.warmup(3, width=32, height=32)  # up to 6 prompts: the bucket of 8
    assert sorted(key[0] for key in pipe.clip.text_tower._graphs) == [1, 2, 4, 8]  # 8 was left out


def test_text_rows_encode_every_prompt_in_one_graph_of_that_many_rows(tiny_model_dir):
    """With `text_rows`, warm-up's prompts of every batch size land in the one bucket, and a prompt's
    embedding is the same bits alone and beside others (the encoder's test has the chunking)."""
    pipe = Pipeline.from_folder(tiny_model_dir)
    with pytest.raises(ValueError, match="text_rows must be at least 1"):
        pipe.accelerate((1, 2, 4), compile=False, capture=False, text_rows=0)
    pipe.accelerate((1, 2, 4), compile=False, capture=False, text_rows=4)
    assert pipe.clip.text_rows == 4
    pipe.warmup(2, width=32, height=32)
    assert sorted(key[0] for key in pipe.clip.text_tower._graphs) == [4]
    with torch.inference_mode():  # as the pipeline's own calls
        alone = pipe.clip.encode_text(["a blue square"])
        pipe.clip.clear_cache()
        beside = pipe.clip.encode_text(["a red circle", "a blue square", "a green triangle"])
    assert torch.equal(alone[0], beside[1])
    pipe.accelerate((1, 2, 4), compile=False, capture=False)
    assert pipe.clip.text_rows is None


def test_compile_text_runs_the_chunks_through_a_compiled_tower_with_the_eager_embeddings(tiny_model_dir):
    """The candidate `compile_text`: the text tower through torch.compile for its one chunk shape; its
    embeddings are the eager tower's within float32 rounding, and a prompt's are the same bits alone and
    among others."""
    pipe = Pipeline.from_folder(tiny_model_dir)
    prompts = ["a red circle", "a blue square", "a green triangle above a yellow circle"]
    with torch.inference_mode():
        eager = pipe.clip.encode_text(prompts)
    pipe.clip.clear_cache()
    pipe.accelerate((1, 2, 4), compile=False, capture=False, text_rows=4, compile_text=True)
    tower = pipe.clip.text_tower
    assert isinstance(tower, BucketGraphs) and tower.fn != pipe.clip.model.encode_text
    with torch.inference_mode():
        compiled = pipe.clip.encode_text(prompts)
        pipe.clip.clear_cache()
        alone = pipe.clip.encode_text(prompts[1:2])
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    assert torch.equal(alone[0], compiled[1])


def test_render_decodes_chosen_steps_of_the_same_pass(pipe):
    """Previews come from the sampling pass that makes the pictures: the pictures are `images`' own, and a
    draw's previews are its own whatever the batch asks of the others."""
    batch = draws([Generate("a red circle", 32, 32), Generate("a blue square", 32, 32)], [1, 2], pipe=pipe)
    steps = pipe.config.sampler.steps
    pictures, previews = pipe.render(batch, [(0, steps - 2), ()])
    plain = pipe.images(batch)
    assert [p.tobytes() for p in pictures] == [p.tobytes() for p in plain]
    assert [len(p) for p in previews] == [2, 0]
    assert all(p.size == (32, 32) for p in previews[0])
    alone, (own,) = pipe.render(batch[:1], [(steps - 2,)])
    assert own[0].tobytes() == previews[0][1].tobytes()
    assert alone[0].tobytes() == pictures[0].tobytes()


def test_sealed_graphs_run_a_new_setting_uncaptured_until_it_recurs():
    """After `seal`, a key met for the first time runs the function itself (unpadded, nothing captured) for
    its first uses, and is captured at the `capture_after`-th; keys captured before are replayed."""
    seen: list[int] = []

    def double(x: torch.Tensor, *, shift: int = 0) -> torch.Tensor:
        seen.append(x.shape[0])
        return x * 2 + shift

    graphs = BucketGraphs(double, (2, 4), capture=False)
    x = torch.arange(3.0)[:, None]
    assert torch.equal(graphs(x), x * 2) and seen == [4]  # first use: the padded batch (captured on CUDA)
    graphs.seal(3)
    assert torch.equal(graphs(x), x * 2) and seen == [4, 4]  # a known key: the padded batch again
    for _ in range(2):
        assert torch.equal(graphs(x, shift=1), x * 2 + 1) and seen[-1] == 3  # uncaptured, unpadded
        assert len(graphs) == 1
    assert torch.equal(graphs(x, shift=1), x * 2 + 1) and len(graphs) == 2 and seen[-1] == 4
    assert graphs.events == {"captured": 2, "uncaptured": 2, "late": 1}
    graphs.seal(1, max_late=1)  # one more late capture, then none
    graphs(x, shift=2)
    assert len(graphs) == 3
    for _ in range(3):
        assert torch.equal(graphs(x, shift=3), x * 2 + 3) and seen[-1] == 3
    assert len(graphs) == 3 and graphs.events["uncaptured"] == 5
    with pytest.raises(ValueError):
        graphs.seal(0)


def test_after_warmup_previews_and_the_other_guidance_run_uncaptured_with_eager_tokens(tiny_model_dir):
    """Settings warm-up did not meet (previews; guidance on where the default is off, or the reverse)
    capture nothing at their first use, and their tokens are eager sampling's."""
    pipe = Pipeline.from_folder(tiny_model_dir)
    plain = draws([Generate("a red circle", 32, 32), Generate("a blue square", 32, 32)], [1, 2], pipe=pipe)
    scale = -1.0 if pipe.config.sampler.guided else 3.0
    other = [dataclasses.replace(d, sampler=d.sampler.replace(guidance_scale=scale)) for d in plain]
    previewed = dataclasses.replace(pipe.rows(plain), snapshots=(pipe.config.sampler.steps - 2,))
    eager, eager_other = pipe.sample(previewed), pipe.tokens(other)
    pipe.accelerate((1, 2, 4), compile=False, capture=False)
    pipe.warmup(2, width=32, height=32)
    captured = len(pipe._sample)
    fast = pipe.sample(previewed)
    assert torch.equal(fast.tokens, eager.tokens) and torch.equal(fast.snapshots, eager.snapshots)
    assert torch.equal(pipe.tokens(other), eager_other)
    assert len(pipe._sample) == captured and pipe.graph_events["uncaptured"] == 2


@pytest.mark.slow
def test_compile_cache_counts_tell_a_restart_that_reuses_the_first_compilation(tmp_path):
    """A process compiling into an empty cache misses; a second process with the same cache hits: what the
    warm-up's log line shows (two processes, about 20 s of C++ compilation on the CPU)."""
    script = (
        "import json, torch; from model.graphs import compile_cache_counts; "
        "torch.compile(lambda x: (x * 2 + 1).sin())(torch.ones(4)); print(json.dumps(compile_cache_counts()))"
    )
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run(
            [sys.executable, "-W", "ignore", "-c", script],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        for _ in range(2)
    ]
    first, second = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert first["fx_graph_misses"] >= 1 and first["fx_graph_hits"] == 0
    assert second["fx_graph_hits"] >= 1 and second["fx_graph_misses"] == 0
