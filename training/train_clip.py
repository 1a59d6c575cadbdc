"""Train the small CLIP contrastively on shapes-world pictures and word-dropout captions.

Two choices make its text embeddings compositional enough to name held-out (colour, shape,
position) triples:
- captions leave words out, and the loss knows which pictures each caption is true of: InfoNCE
  with a learned temperature (Radford et al. 2021) whose targets spread over every matching
  picture of the batch ("a red circle" matches every red circle), so each word is learned alone;
- half of every batch are hard negatives: copies of the other half changed in one attribute.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from model.clip import ClipEncoder, WordTokenizer
from model.config import CLIPConfig
from training import world
from training.data import SceneStream, batches
from training.loop import Run, autocast, optimizer_step, save_part, setup_device
from training.mini import MINI_CLIP


def contrastive_loss(
    text: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor, matches: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over (B_text, B_image) cosine logits, targets uniform over `matches`."""
    logits = logit_scale.exp().clamp(max=100) * F.normalize(text, dim=-1) @ F.normalize(image, dim=-1).T
    target = matches.float()
    loss_t = -(target / target.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    loss_i = -(target.T / target.T.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean()
    return (loss_t + loss_i) / 2


@torch.no_grad()
def retrieval_accuracy(clip: ClipEncoder, device: torch.device) -> dict[str, float]:
    """Top-1 text-to-image retrieval of full one-object captions among every one-object picture.

    Reported apart for seen and held-out triples: the held-out score shows whether the text tower
    composes words it never saw together.
    """
    combos = [
        (bg, c, s, z, p)
        for bg in range(len(world.COLORS))
        for c in range(len(world.COLORS))
        for s in range(len(world.SHAPES))
        for z in range(len(world.SIZES))
        for p in range(len(world.POSITIONS))
        if c != bg
    ]
    scenes = world.single_object_scenes(*torch.tensor(combos, device=device).unbind(1))
    images = world.render(scenes)
    with autocast(device):
        image_emb = torch.cat([clip.encode_image(chunk) for chunk in images.split(512)])
        text_emb = torch.cat(
            [clip.encode_text(chunk) for chunk in _chunks(world.full_captions(scenes).texts(), 512)]
        )
    sims = F.normalize(text_emb.float(), dim=-1) @ F.normalize(image_emb.float(), dim=-1).T
    right = sims.argmax(1) == torch.arange(len(combos), device=device)
    held = world.held_out_mask(scenes.color[:, 0], scenes.shape[:, 0], scenes.position[:, 0])
    return {
        "seen_top1": round(float(right[~held].float().mean()), 4),
        "held_out_top1": round(float(right[held].float().mean()), 4),
    }


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def train_clip(
    out: Path,
    *,
    device: str = "cpu",
    steps: int | None = None,
    minutes: float | None = None,
    batch: int = 512,
    lr: float = 5e-4,
    config: CLIPConfig = MINI_CLIP,
    seed: int = 0,
    check_retrieval: bool = True,
) -> Path:
    """Train the CLIP from scratch and save `out/clip.safetensors` (open_clip key names); returns its path."""
    dev = setup_device(device)
    torch.manual_seed(seed)
    vocab = world.vocabulary()
    clip = ClipEncoder(config, vocab).to(dev).train()
    decay = [p for p in clip.parameters() if p.dim() >= 2]
    rest = [p for p in clip.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    tokenizer = WordTokenizer(vocab, config.context_length)
    data = batches(SceneStream(batch, tokenizer, seed=seed, hard_negatives=True), dev)
    run = Run("clip", out, steps=steps, minutes=minutes)
    for _, b in zip(run, data, strict=False):
        cur_lr = run.set_lr(opt, lr)
        with autocast(dev):
            text = clip.model.encode_text(b.tokens)  # (B, embed_dim)
            image = clip.encode_image(world.render(b.scenes))
        matches = b.captions.matches(b.scenes)  # (B, B)
        loss = contrastive_loss(text.float(), image.float(), clip.model.logit_scale, matches)
        optimizer_step(opt, clip.parameters(), loss)
        run.log(loss=loss, scale=clip.model.logit_scale.exp(), lr=cur_lr)
    clip.eval()
    summary = (
        run.summary(dev)
        | (retrieval_accuracy(clip, dev) if check_retrieval else {})
        | {"batch": batch, "lr": lr}
    )
    print(f"clip: {summary}")
    path = out / "clip.safetensors"
    meta = {"config": dataclasses.asdict(config), "vocab": vocab, "train": summary}
    save_part(path, clip.model, meta)
    return path
