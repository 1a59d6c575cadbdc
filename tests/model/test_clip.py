import json

import open_clip
import pytest
import torch
import torch.nn.functional as F

from model.clip import ClipEncoder, WordTokenizer
from model.config import CLIPConfig
from tests.conftest import tiny_model_config, tiny_vocabulary


def test_word_tokenizer_builds_from_captions_and_round_trips_json():
    tok = WordTokenizer.from_corpus(["A red circle.", "a BLUE circle", "a red-ish square"], context_length=6)
    assert tok.words == ["a", "circle", "red", "blue", "ish", "square"]  # by frequency, then alphabetical
    assert WordTokenizer.split("Two 2 big_Squares, left!") == ["two", "big", "squares", "left"]
    again = WordTokenizer.from_json(tok.to_json(), context_length=6)
    assert again.words == tok.words and json.loads(tok.to_json()) == tok.words
    assert WordTokenizer.from_corpus(["a a b", "a c"], min_count=2).words == ["a"]


def test_word_tokenizer_ids_pad_truncate_and_end_highest():
    tok = WordTokenizer(["a", "red", "circle"], context_length=5)
    ids = tok(["a red circle", "a purple circle left of a red circle", ""])
    end = tok.end
    assert end == 6 and tok.vocab_size == 7
    assert ids.tolist() == [
        [tok.START, 3, 4, 5, end],
        [tok.START, 3, tok.UNKNOWN, 5, end],  # truncated, the end kept
        [tok.START, end, tok.PAD, tok.PAD, tok.PAD],
    ]
    assert (ids.argmax(-1) == torch.tensor([4, 4, 1])).all()  # open_clip's argmax pooling finds the end


@pytest.fixture(scope="module")
def encoder() -> ClipEncoder:
    torch.manual_seed(0)
    return ClipEncoder(tiny_model_config().clip, tiny_vocabulary(), cache_size=3).eval()


def test_encode_text_is_the_projected_pooled_unnormalised_embedding(encoder):
    prompts = ["a red circle", "a blue square", "a red circle"]
    with torch.inference_mode():
        emb = encoder.encode_text(prompts)
        direct = encoder.model.encode_text(encoder.tokenizer(prompts))
    assert emb.shape == (3, 16)
    assert torch.allclose(emb, direct, atol=1e-6)
    assert torch.equal(emb[0], emb[2])
    assert not torch.allclose(emb.norm(dim=-1), torch.ones(3))


def test_text_cache_is_a_bounded_lru_and_agrees_with_fresh_encodes(encoder):
    encoder.clear_cache()
    prompts = ["a red circle", "a blue square", "a green triangle", "two purple squares", "a red circle"]
    with torch.inference_mode():
        fresh = torch.cat([encoder.model.encode_text(encoder.tokenizer([p])) for p in prompts])
        for p, f in zip(prompts, fresh, strict=True):
            assert torch.allclose(encoder.encode_text([p])[0], f, atol=1e-6)
        assert list(encoder._cache) == ["a green triangle", "two purple squares", "a red circle"]
        assert torch.allclose(encoder.encode_text(prompts), fresh, atol=1e-6)
    assert len(encoder._cache) == 3


def test_text_rows_encode_in_padded_chunks_of_that_many_rows(encoder):
    """A prompt's embedding is the one its chunk of `text_rows` rows gives it: the same bits alone, in
    a batch of three and in the second chunk of six."""
    prompts = ["a red circle", "a blue square", "a green triangle", "two purple squares", "a big orange", "a"]
    ids = encoder.tokenizer(prompts)
    encoder.clear_cache()
    encoder.text_rows = 4
    try:
        with torch.inference_mode():
            chunked = encoder.encode_text(prompts)
            encoder.clear_cache()
            alone = [encoder.encode_text([p])[0] for p in prompts[3:5]]
            first = encoder.model.encode_text(ids[:4])
            second = encoder.model.encode_text(torch.cat([ids[4:], torch.zeros_like(ids[:2])]))[:2]
    finally:
        encoder.text_rows = None
        encoder.clear_cache()
    assert torch.equal(chunked, torch.cat([first, second]))
    assert torch.equal(alone[0], first[3]) and torch.equal(alone[1], second[0])


def test_encode_image_resizes_crops_and_normalises_like_open_clip(encoder):
    g = torch.Generator().manual_seed(1)
    square = torch.rand(2, 3, 32, 32, generator=g)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN)[:, None, None]
    std = torch.tensor(open_clip.OPENAI_DATASET_STD)[:, None, None]
    assert torch.allclose(encoder.preprocess(square), (square - mean) / std)
    wide = torch.rand(1, 3, 64, 128, generator=g)
    expected = F.interpolate(wide, size=(32, 64), mode="bicubic", antialias=True).clamp(0, 1)[..., 16:48]
    assert torch.allclose(encoder.preprocess(wide), (expected - mean) / std, atol=1e-6)
    with torch.inference_mode():
        emb = encoder.encode_image(square)
        assert torch.allclose(emb, encoder.model.encode_image((square - mean) / std), atol=1e-5)
    assert emb.shape == (2, 16)


def test_the_open_clip_tokenizer_is_the_local_bpe():
    config = CLIPConfig(
        model_name="tiny-bpe",
        embed_dim=8,
        custom={
            "embed_dim": 8,
            "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 16, "layers": 1, "head_width": 8},
            "text_cfg": {"width": 16, "heads": 2, "layers": 1},
        },
        context_length=10,
    )
    enc = ClipEncoder(config)
    ids = enc.tokenizer(["a photo of a cat"])
    assert ids.shape == (1, 10) and ids[0, 0] == 49406 and ids[0, 6] == 49407
    assert enc.encode_text(["a photo of a cat"]).shape == (1, 8)


def test_mismatched_configs_fail_early():
    config = tiny_model_config().clip
    with pytest.raises(ValueError, match="vocabulary"):
        ClipEncoder(config)
    with pytest.raises(ValueError, match="embeds to 16"):
        ClipEncoder(CLIPConfig(**{**config.__dict__, "embed_dim": 32}), tiny_vocabulary())
    custom = {**config.custom, "text_cfg": {**config.custom["text_cfg"], "vocab_size": 5}}
    with pytest.raises(ValueError, match="token rows"):
        ClipEncoder(CLIPConfig(**{**config.__dict__, "custom": custom}), tiny_vocabulary())
