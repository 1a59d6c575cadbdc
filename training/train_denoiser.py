"""Train the denoiser with Paella v1's objective on frozen-VQGAN tokens, conditioned on the frozen CLIP.

Per sample: r ~ U[0, 1); each token is replaced, with probability cos(r * pi / 2), by a uniformly
random code; the network predicts the clean tokens under cross-entropy with label smoothing 0.1
(Rampas et al. 2022). The condition is the CLIP text embedding of a word-dropout caption, in a
fraction of samples the CLIP image embedding of the same picture (so variations work), and in
10% of samples zeros (classifier-free guidance). The weights kept are an exponential moving average.

Two additions train the image operations the sampler builds from the same loop:
- inpainting: in a share of samples only a random box of tokens is noised and the rest stay clean,
  as the sampler holds them during inpainting; the loss counts the box;
- multi-conditioning: each step also trains on canvases twice as wide (or tall) made of two scenes
  on one background, each half conditioned on its own caption through a spatial condition map, as a
  composition asks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from model.clip import ClipEncoder, WordTokenizer
from model.config import CLIPConfig, DenoiserConfig, VQGANConfig
from model.denoiser import Denoiser
from model.sampler import noise_tokens
from model.vqgan import VQGAN
from training import world
from training.data import Batch, SceneStream, batches
from training.loop import Run, autocast, load_frozen_part, optimizer_step, save_part, setup_device
from training.mini import MINI_CLIP, MINI_DENOISER, MINI_VQGAN

P_IMAGE = 0.2  # samples conditioned on the CLIP image embedding
P_UNCOND = 0.1  # samples conditioned on zeros
P_REGION = 0.25  # samples noised only inside a random box (inpainting)
P_TWO = 0.6  # scenes with two objects
PAIRS = 8  # one composition canvas per this many samples of the batch
LABEL_SMOOTHING = 0.1


def region_boxes(n: int, h: int, w: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, h, w) bool: one random axis-aligned box per sample, each side a quarter to three quarters of
    the grid."""

    def spans(size: int) -> torch.Tensor:
        length = torch.randint(size // 4, 3 * size // 4 + 1, (n, 1), generator=generator, device=device)
        start = (torch.rand(n, 1, generator=generator, device=device) * (size - length + 1)).long()
        idx = torch.arange(size, device=device)
        return (idx >= start) & (idx < start + length)  # (n, size)

    return spans(h)[:, :, None] & spans(w)[:, None, :]


def half_map(first: torch.Tensor, second: torch.Tensor, grid: tuple[int, int], wide: bool) -> torch.Tensor:
    """(n, c, h, w) condition map: `first` (n, c) over the left (or top) half, `second` over the other."""
    h, w = grid
    if wide:
        halves = [e[:, :, None, None].expand(-1, -1, h, w // 2) for e in (first, second)]
        return torch.cat(halves, dim=3)
    halves = [e[:, :, None, None].expand(-1, -1, h // 2, w) for e in (first, second)]
    return torch.cat(halves, dim=2)


def token_loss(logits: torch.Tensor, tokens: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Label-smoothed cross-entropy summed over positions with `weight` (B, h, w)."""
    ce = F.cross_entropy(logits.float(), tokens, label_smoothing=LABEL_SMOOTHING, reduction="none")
    return (ce * weight).sum()


def train_denoiser(
    out: Path,
    *,
    vqgan: Path,
    clip: Path,
    device: str = "cpu",
    steps: int | None = None,
    minutes: float | None = None,
    batch: int = 256,
    lr: float = 1e-3,
    config: DenoiserConfig = MINI_DENOISER,
    vqgan_config: VQGANConfig = MINI_VQGAN,
    clip_config: CLIPConfig = MINI_CLIP,
    ema_decay: float = 0.999,
    seed: int = 0,
    init: Path | None = None,
) -> Path:
    """Train the denoiser against frozen VQGAN and CLIP checkpoints; save `out/denoiser.safetensors`.

    `init`: a trained `denoiser.safetensors` to go on from (a new warmup and cosine over this budget).
    """
    dev = setup_device(device)
    torch.manual_seed(seed)
    vq = VQGAN(vqgan_config).to(dev)
    load_frozen_part(vqgan, vq, vqgan_config)
    vocab = world.vocabulary()
    encoder = ClipEncoder(clip_config, vocab)
    load_frozen_part(clip, encoder.model, clip_config)
    encoder.to(dev)
    model = Denoiser(config)
    earlier: dict[str, object] = {}
    if init is not None:
        earlier = load_frozen_part(init, model, config).get("train", {})
    model = model.to(dev).train().requires_grad_(True)
    ema = Denoiser(config).to(dev).eval().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )
    tokenizer = WordTokenizer(vocab, clip_config.context_length)
    data = batches(SceneStream(batch, tokenizer, seed=seed, p_drop=0.2, p_two=P_TWO), dev)
    pairs_per_step = max(batch // PAIRS, 1)
    pair_stream = SceneStream(
        2 * pairs_per_step, tokenizer, seed=seed + 1, p_drop=0.2, p_two=0.3, shared_background=True
    )
    pair_data = batches(pair_stream, dev, workers=3)
    g = torch.Generator(dev).manual_seed(seed)
    run = Run("denoiser", out, steps=steps, minutes=minutes)
    for _, b, pairs in zip(run, data, pair_data, strict=False):
        cur_lr = run.set_lr(opt, lr)
        images = world.render(b.scenes)
        with torch.no_grad():  # in full precision, as served
            tokens = vq.encode(images.contiguous(memory_format=torch.channels_last))  # (B, h, w)
            text = encoder.model.encode_text(b.tokens)  # (B, c_clip)
            image = encoder.encode_image(images)
            pair_tokens, pair_cond = _compositions(vq, encoder, pairs, wide=run.step % 2 == 0, g=g)
        n = tokens.shape[0]
        u = torch.rand(n, 1, device=dev, generator=g)
        cond = torch.where(u < P_IMAGE, image, text)
        cond = torch.where(u > 1 - P_UNCOND, torch.zeros_like(cond), cond)
        region = torch.rand(n, device=dev, generator=g) < P_REGION
        box = region_boxes(n, tokens.shape[1], tokens.shape[2], g, dev) | ~region[:, None, None]  # noised
        noisy, r = _noised(tokens, g, config.num_labels)
        noisy = torch.where(box, noisy, tokens)
        pair_noisy, pair_r = _noised(pair_tokens, g, config.num_labels)
        with autocast(dev):
            logits = model(noisy, cond, r)  # (B, num_labels, h, w)
            pair_logits = model(pair_noisy, pair_cond, pair_r)  # (B / PAIRS, num_labels, h, 2w) or 2h, w
        loss = token_loss(logits, tokens, box.float())
        loss = loss + token_loss(pair_logits, pair_tokens, torch.ones_like(pair_tokens, dtype=torch.float32))
        loss = loss / (box.sum() + pair_tokens.numel())
        optimizer_step(opt, model.parameters(), loss)
        with torch.no_grad():
            d = min(ema_decay, (1 + run.step) / (10 + run.step))
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - d)
        if run.step % run.log_every == 0:
            acc = (logits.argmax(1) == tokens).float().mean()
            pair_acc = (pair_logits.argmax(1) == pair_tokens).float().mean()
            run.log(loss=loss, acc=acc, pair_acc=pair_acc, lr=cur_lr)
    summary = run.summary(dev) | {"batch": batch, "lr": lr, "ema_decay": ema_decay}
    summary |= {"p_two": P_TWO, "p_region": P_REGION, "pairs": pairs_per_step}
    if init is not None:
        summary["after"] = earlier
    print(f"denoiser: {summary}")
    path = out / "denoiser.safetensors"
    save_part(path, ema, {"config": dataclasses.asdict(config), "train": summary})
    return path


def _noised(tokens: torch.Tensor, g: torch.Generator, num_labels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Paella v1's training noise: r ~ U[0, 1) per sample, each token replaced with probability cos(r*pi/2)
    by a random code. Returns the noised tokens and r."""
    n, dev = tokens.shape[0], tokens.device
    r = torch.rand(n, device=dev, generator=g)
    seeds = torch.randint(-(2**63), 2**63 - 1, (n,), device=dev, generator=g)
    return noise_tokens(tokens, r, seeds=seeds, step=0, num_labels=num_labels), r


@torch.no_grad()
def _compositions(
    vq: VQGAN, encoder: ClipEncoder, pairs: Batch, *, wide: bool, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens (n, h, 2w) (or (n, 2h, w)) of canvases holding two scenes side by side (or one above the
    other) on one background, and their condition maps: each half its own caption's embedding, zeros
    for a share P_UNCOND of canvases."""
    images = world.render(pairs.scenes)  # (2n, 3, H, W): rows i and n + i share a background
    first, second = images.chunk(2)
    canvas = torch.cat([first, second], dim=3 if wide else 2)
    tokens = vq.encode(canvas.contiguous(memory_format=torch.channels_last))  # (n, h, 2w) or (n, 2h, w)
    text_first, text_second = encoder.model.encode_text(pairs.tokens).chunk(2)
    cond = half_map(text_first, text_second, (tokens.shape[1], tokens.shape[2]), wide)
    keep = torch.rand(len(tokens), device=tokens.device, generator=g) >= P_UNCOND
    return tokens, cond * keep[:, None, None, None]
