"""The CLIP encoder that conditions Paella: OpenCLIP models and tokenizers (the one open_clip import)."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from model.config import CLIPConfig
from model.transfer import to_device

# Rows per call of the text tower on CUDA (`ClipEncoder.text_rows`): an H100 run of `batch_invariance.py`
# had every token of paella-mini's fast path the same alone, in a batch and in a mixed batch with it (and
# the matrix-product upsampling), against 99.4-99.6% without; it costs 0.9 ms for one prompt, 6 ms for 64.
TEXT_ROWS = 8


class WordTokenizer:
    """A closed-world word-level tokenizer: lowercase, split on non-letters, one id per known word.

    Ids: 0 pad, 1 start, 2 unknown, 3.. the words, and the end token last, so it is the highest id of
    every sequence, as open_clip's `argmax` text pooling expects.
    """

    PAD, START, UNKNOWN = 0, 1, 2

    def __init__(self, words: Sequence[str], context_length: int = 77):
        self.words = list(words)
        if len(set(self.words)) != len(self.words):
            raise ValueError("the vocabulary repeats words")
        self.ids = {w: i + 3 for i, w in enumerate(self.words)}
        self.end = len(self.words) + 3
        self.context_length = context_length

    @property
    def vocab_size(self) -> int:
        return self.end + 1

    @staticmethod
    def split(text: str) -> list[str]:
        """The words of a text: lowercase runs of letters."""
        return re.findall(r"[^\W\d_]+", text.lower())

    @classmethod
    def from_corpus(
        cls, captions: Iterable[str], *, context_length: int = 77, min_count: int = 1
    ) -> WordTokenizer:
        """The words seen at least `min_count` times, most frequent first (ties alphabetical)."""
        counts = Counter(w for caption in captions for w in cls.split(caption))
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(words, context_length)

    def to_json(self) -> str:
        """The word list as JSON (our weight folders' vocab.json)."""
        return json.dumps(self.words, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes, context_length: int = 77) -> WordTokenizer:
        return cls(json.loads(text), context_length)

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(w, self.UNKNOWN) for w in self.split(text)]

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids [B, context_length] int64: start, words (truncated), end, padding."""
        out = torch.full((len(texts), self.context_length), self.PAD, dtype=torch.int64)
        for i, text in enumerate(texts):
            ids = [*[self.START, *self.encode(text)][: self.context_length - 1], self.end]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


class ClipEncoder(nn.Module):
    """OpenCLIP's text and image towers giving Paella's condition: pooled, projected, not normalised (v1).

    `model` is the open_clip model; its state dict (open_clip's own key names) is what a weight folder's
    clip.safetensors holds. Weights are never downloaded: the architecture is built empty and loaded later.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, config: CLIPConfig, vocab: Sequence[str] | None = None, *, cache_size: int = 0):
        super().__init__()
        self.config = config
        self.tokenizer: Callable[[list[str]], torch.Tensor]
        if config.tokenizer == "words":
            if vocab is None:
                raise ValueError('the "words" tokenizer needs its vocabulary')
            words = WordTokenizer(vocab, config.context_length)
            self.tokenizer = words
        else:
            bpe = open_clip.SimpleTokenizer(context_length=config.context_length)
            self.tokenizer = bpe
        if config.custom is not None:
            cfg = copy.deepcopy(config.custom)
            embed_dim = cfg["embed_dim"]
            text_cfg = cfg.setdefault("text_cfg", {})
            text_cfg.setdefault("context_length", config.context_length)
            if config.tokenizer == "words":
                text_cfg.setdefault("vocab_size", words.vocab_size)
            self.model = open_clip.model.CLIP(**cfg)
        else:
            device = torch.get_default_device()
            self.model = open_clip.create_model(config.model_name, pretrained=None, device=device)
            embed_dim = open_clip.get_model_config(config.model_name)["embed_dim"]
        self._check(embed_dim, words.vocab_size if config.tokenizer == "words" else None)
        pre = open_clip.get_model_preprocess_cfg(self.model)
        size = self.model.visual.image_size
        self.image_size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.register_buffer("mean", torch.tensor(pre.get("mean") or OPENAI_DATASET_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(pre.get("std") or OPENAI_DATASET_STD), persistent=False)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._text_rows: int | None = None
        self.text_tower: Callable[[torch.Tensor], torch.Tensor] = (
            self.model.encode_text
        )  # token ids -> embeddings
        self.image_tower: Callable[[torch.Tensor], torch.Tensor] = (
            self.model.encode_image
        )  # preprocessed pixels -> embeddings

    def _check(self, embed_dim: int, vocab_size: int | None) -> None:
        """Fail early when the built model and the config or tokenizer disagree."""
        text = open_clip.get_model_tokenize_cfg(self.model)
        if embed_dim != self.config.embed_dim:
            raise ValueError(f"CLIP embeds to {embed_dim}, config says {self.config.embed_dim}")
        if text.get("context_length") != self.config.context_length:
            raise ValueError(
                f"CLIP context is {text.get('context_length')}, config says {self.config.context_length}"
            )
        if vocab_size is not None and text.get("vocab_size") != vocab_size:
            raise ValueError(
                f"CLIP has {text.get('vocab_size')} token rows, the vocabulary needs {vocab_size}"
            )

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def text_rows(self) -> int | None:
        """None: prompts are encoded together, in batches of any size. A number: in chunks of exactly that
        many rows (the last padded with empty ones), so a prompt's embedding is the same bits whatever was
        encoded beside it: products and attention pick their kernels, and round, by the batch size."""
        return self._text_rows

    @text_rows.setter
    def text_rows(self, rows: int | None) -> None:
        if rows is not None and rows < 1:
            raise ValueError(f"text_rows must be at least 1, got {rows}")
        self._text_rows = rows

    def clear_cache(self) -> None:
        self._cache.clear()

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text embeddings [B, embed_dim]; in eval mode recent prompts come from an LRU cache."""
        if self.training:
            return self.model.encode_text(to_device(self.tokenizer(list(prompts)), self.device))
        if not self.cache_size:
            return self._encode(list(prompts))
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            fresh = self._encode(missing)
            self._cache.update(zip(missing, fresh.detach(), strict=True))
        out = torch.stack([self._cache[p] for p in prompts])
        for p in prompts:
            self._cache.move_to_end(p)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        """The text tower's embeddings of `prompts`, in chunks of `text_rows` when it is set."""
        ids = to_device(self.tokenizer(prompts), self.device)
        rows = self.text_rows
        if rows is None:
            return self.text_tower(ids)
        chunks = []
        for chunk in ids.split(rows):
            n = len(chunk)
            padded = torch.cat([chunk, chunk.new_zeros(rows - n, chunk.shape[1])]) if n < rows else chunk
            chunks.append(self.text_tower(padded)[:n])
        return torch.cat(chunks)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] to the tower's input: shorter side resized (bicubic, antialiased),
        centre crop, open_clip mean/std normalisation, as open_clip's own transform does."""
        h, w = self.image_size
        H, W = images.shape[-2:]
        scale = max(h / H, w / W)
        size = (max(h, round(H * scale)), max(w, round(W * scale)))
        x = images.to(self.device, self.dtype)
        if size != (H, W):
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (size[0] - h) // 2, (size[1] - w) // 2
        x = x[..., top : top + h, left : left + w]
        return (x - self.mean.to(x.dtype)[:, None, None]) / self.std.to(x.dtype)[:, None, None]

    def encode_image(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Image embeddings [B, embed_dim] from images [B, 3, H, W] in [0, 1], or a list of [3, H, W] of
        any sizes (each preprocessed alone, then one batched forward)."""
        if isinstance(images, torch.Tensor):
            return self.image_tower(self.preprocess(images))
        return self.image_tower(torch.cat([self.preprocess(im[None]) for im in images]))
