"""Endless training batches of shapes-world scenes and caption tokens, drawn on the CPU in workers.

Workers draw scenes (index tensors) and tokenize their captions, so the training loop never waits
on Python string work; the loop moves the small index tensors to the device and renders there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from model.clip import WordTokenizer
from training import world


@dataclass(frozen=True)
class Batch:
    """Scenes, their word-dropout captions and the captions' token ids (B, context_length)."""

    captions: world.Captions
    tokens: torch.Tensor

    @property
    def scenes(self) -> world.Scenes:
        return self.captions.scenes

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return Batch(
            self.captions.to(device, non_blocking), self.tokens.to(device, non_blocking=non_blocking)
        )

    def pin_memory(self) -> Batch:
        return Batch(self.captions.pin_memory(), self.tokens.pin_memory())


class SceneStream(IterableDataset[Batch]):
    """Batches of `batch` training scenes (never a held-out triple), each worker with its own seed.

    With `hard_negatives`, the second half of every batch copies the first half changed in one
    attribute or, for half of the two-object scenes, with one attribute exchanged between the two
    objects (for contrastive training). With `shared_background`, row i of the second half has the
    background of row i of the first (the two halves of a composition canvas).
    """

    def __init__(
        self,
        batch: int,
        tokenizer: WordTokenizer,
        *,
        seed: int,
        p_drop: float = 0.3,
        p_two: float = 0.5,
        hard_negatives: bool = False,
        shared_background: bool = False,
    ):
        if hard_negatives and shared_background:
            raise ValueError("hard_negatives and shared_background both define the second half")
        self.batch, self.tokenizer, self.seed = batch, tokenizer, seed
        self.p_drop, self.p_two = p_drop, p_two
        self.hard_negatives, self.shared_background = hard_negatives, shared_background

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        g = torch.Generator().manual_seed(self.seed * 1009 + (info.id if info else 0))
        while True:
            half = self.batch - self.batch // 2
            if self.hard_negatives:
                base = world.sample_scenes(half, g, p_two=self.p_two)
                swapped = world.swap_bindings(base, g)
                changed = (swapped.color != base.color) | (swapped.shape != base.shape)
                changed = (changed | (swapped.size != base.size)).any(1)
                use_swap = changed & (torch.rand(half, generator=g) < 0.5)
                scenes = base.cat(world.perturb_scenes(base, g).where(use_swap, swapped))
            elif self.shared_background:
                base = world.sample_scenes(half, g, p_two=self.p_two)
                scenes = base.cat(world.sample_scenes(half, g, p_two=self.p_two, background=base.background))
            else:
                scenes = world.sample_scenes(self.batch, g, p_two=self.p_two)
            captions = world.dropout_captions(scenes, g, p_drop=self.p_drop)
            yield Batch(captions, self.tokenizer(captions.texts()))


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def batches(stream: SceneStream, device: torch.device, workers: int = 6) -> Iterator[Batch]:
    """The stream's batches on `device`: worker processes and pinned memory on CUDA, inline on the CPU."""
    cuda = device.type == "cuda"
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=workers if cuda else 0,
        pin_memory=cuda,
        prefetch_factor=8 if cuda else None,
        persistent_workers=cuda,
        worker_init_fn=_one_thread if cuda else None,
    )
    for batch in loader:
        yield batch.to(device, non_blocking=cuda)
