"""The shapes world: sampling constraints, held-out rule, captions and exact rendering."""

from __future__ import annotations

import torch

from training import world


def test_held_out_rule_matches_spec() -> None:
    # red circle top left: 0 + 0 + 0 = 0 -> held out; red circle top right: 1 -> seen.
    assert world.is_held_out(0, 0, 0)
    assert not world.is_held_out(0, 0, 1)
    # gray (8) triangle (2) bottom left (2): 24 + 10 + 2 = 36 -> 36 % 7 = 1.
    assert not world.is_held_out(8, 2, 2)
    assert world.is_held_out(1, 0, 4)  # orange circle center: 3 + 0 + 4 = 7
    assert world.is_held_out(8, 2, 1)  # gray triangle top right: 24 + 10 + 1 = 35
    assert not world.is_held_out(8, 2, 4)  # gray triangle center: 38 % 7 = 3
    assert len(world.HELD_OUT_TRIPLES) == 20
    assert world.HELD_OUT_TRIPLES[:3] == ((0, 0, 0), (0, 1, 2), (0, 2, 4))


def test_training_scenes_respect_the_rules() -> None:
    g = torch.Generator().manual_seed(0)
    s = world.sample_scenes(4096, g)
    assert bool(s.valid(allow_held_out=False).all())
    assert bool(((s.color != s.background[:, None]) | ~s.present).all())
    two = s.present.all(1)
    assert 0.4 < two.float().mean() < 0.6
    assert bool((s.position[two, 0] != s.position[two, 1]).all())
    held = world.held_out_mask(s.color, s.shape, s.position) & s.present
    assert not bool(held.any())
    # every non-held-out triple still shows up
    seen = {
        (c, sh, p)
        for c, sh, p, on in zip(
            s.color.flatten().tolist(),
            s.shape.flatten().tolist(),
            s.position.flatten().tolist(),
            s.present.flatten().tolist(),
            strict=True,
        )
        if on
    }
    assert len(seen) == 9 * 3 * 5 - len(world.HELD_OUT_TRIPLES)


def test_perturbed_scenes_differ_in_one_attribute() -> None:
    g = torch.Generator().manual_seed(1)
    s = world.sample_scenes(512, g)
    p = world.perturb_scenes(s, g)
    assert bool(p.valid(allow_held_out=False).all())
    diffs = (p.background != s.background).long()
    for name in ("color", "shape", "size", "position"):
        diffs += (getattr(p, name) != getattr(s, name)).long().sum(1)
    assert bool((diffs == 1).float().mean() > 0.95)


def test_render_is_exact_and_shapes_have_the_spec_geometry() -> None:
    s = world.single_object_scenes(
        torch.tensor([4, 4, 4]),
        torch.tensor([0, 0, 0]),
        torch.tensor([0, 1, 2]),
        torch.tensor([1, 1, 0]),
        torch.tensor([0, 4, 3]),
    )
    img = (world.render(s) * 255).round().to(torch.uint8)  # (3, 3, 128, 128)
    assert img.shape == (3, 3, 128, 128)
    colors = {tuple(c) for c in img.permute(0, 2, 3, 1).reshape(-1, 3).tolist()}
    assert colors == {(40, 80, 220), (220, 40, 40)}
    obj = (img[:, 0] == 220).numpy()
    square = obj[1]
    ys, xs = square.nonzero()
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (38, 89, 38, 89)  # 52 px centred at 64
    assert square.sum() == 52 * 52
    assert abs(obj[0].sum() / 52**2 - 0.785) < 0.02  # circle
    ys, xs = obj[2].nonzero()
    assert (xs.min() + xs.max() + 1) / 2 == 96 and (ys.min() + ys.max() + 1) / 2 == 96
    assert abs(obj[2].sum() / 28**2 - 0.5) < 0.05  # triangle
    assert obj[2][ys.min()].sum() <= 2 and obj[2][ys.max()].sum() >= 26  # apex up, base down


def test_captions_follow_the_grammar_and_dropout() -> None:
    s = world.single_object_scenes(
        torch.tensor([4]), torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), torch.tensor([0])
    )
    two = world.Scenes(
        background=torch.tensor([6]),
        color=torch.tensor([[0, 7]]),
        shape=torch.tensor([[1, 2]]),
        size=torch.tensor([[0, 1]]),
        position=torch.tensor([[4, 1]]),
        present=torch.tensor([[True, True]]),
    )
    assert world.full_captions(s.cat(two)).texts() == [
        "a large red circle in the top left on a blue background",
        "a small red square in the center and a large black triangle in the top right on a white background",
    ]
    g = torch.Generator().manual_seed(0)
    scenes = world.sample_scenes(2048, g)
    caps = world.dropout_captions(scenes, g)
    texts = caps.texts()
    vocab = set(world.vocabulary())
    assert all(t and set(t.split()) <= vocab for t in texts)
    assert "a red circle" in texts or any(t.count(" ") < 4 for t in texts)
    assert bool(caps.matches(scenes).diagonal().all())  # a caption is true of its own scene


def test_caption_matching_treats_missing_words_as_any() -> None:
    s = world.single_object_scenes(
        torch.tensor([4, 4, 2]),
        torch.tensor([0, 0, 0]),
        torch.tensor([0, 0, 0]),
        torch.tensor([1, 0, 1]),
        torch.tensor([0, 1, 0]),
    )
    on, off = torch.ones(3, 2, dtype=torch.bool), torch.zeros(3, 2, dtype=torch.bool)
    red_circle = world.Captions(s, s.present, off, on, off, torch.zeros(3, dtype=torch.bool))
    assert bool(red_circle.matches(s).all())
    full = world.full_captions(s).matches(s)
    assert torch.equal(full, torch.eye(3, dtype=torch.bool))


def test_eval_prompts_are_deterministic_and_split() -> None:
    a, b = world.eval_prompts(20, 20, seed=3), world.eval_prompts(20, 20, seed=3)
    assert a.prompts == b.prompts and a.seeds == b.seeds
    s = a.scenes
    held = world.held_out_mask(s.color[:, 0], s.shape[:, 0], s.position[:, 0])
    assert torch.equal(held, a.held_out)
    assert not bool(s.present[:, 1].any())
    assert bool((s.color[:, 0] != s.background).all())


def test_binding_swaps_exchange_one_attribute_between_the_two_objects() -> None:
    g = torch.Generator().manual_seed(2)
    s = world.sample_scenes(1024, g, p_two=0.7)
    w = world.swap_bindings(s, g)
    assert bool(w.valid(allow_held_out=False).all())
    assert torch.equal(w.background, s.background) and torch.equal(w.position, s.position)
    changed = torch.zeros(len(s), dtype=torch.bool)
    for name in ("color", "shape", "size"):
        a, b = getattr(s, name), getattr(w, name)
        moved = (a != b).any(1)
        # a changed attribute is the same pair of values, the other way round
        assert torch.equal(b[moved], a[moved].flip(1))
        changed |= moved
    assert not bool(changed[~s.present.all(1)].any())  # one object: nothing to exchange
    assert 0.6 < changed[s.present.all(1)].float().mean() < 0.95  # swaps into held-out triples stay
    # the exchanged scene keeps every caption word but is another picture
    texts = world.full_captions(w).texts()
    for i in changed.nonzero().flatten()[:20].tolist():
        assert sorted(texts[i].split()) == sorted(world.full_captions(s).texts()[i].split())
        assert not bool(world.full_captions(s).matches(w)[i, i])


def test_composition_halves_share_their_background() -> None:
    g = torch.Generator().manual_seed(3)
    bg = torch.randint(len(world.COLORS), (256,), generator=g)
    s = world.sample_scenes(256, g, background=bg)
    assert torch.equal(s.background, bg)
    assert bool(s.valid(allow_held_out=False).all())
