"""Train the denoiser with Paella v1's objective on frozen-VQGAN tokens, conditioned on the frozen CLIP.

Per sample: r ~ U[0, 1); each token is replaced, with probability cos(r * pi / 2), by a uniformly
random code; the network predicts the clean tokens under cross-entropy with label smoothing 0.1
(Rampas et al. 2022). The condition is the CLIP text embedding of a word-dropout caption, in a
fraction of samples the CLIP image embedding of the same picture (so variations work), and in
10% of samples zeros (classifier-free guidance). The weights kept are an exponential moving average.
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
from training.data import SceneStream, batches
from training.loop import Run, autocast, load_frozen_part, save_part, setup_device
from training.mini import MINI_CLIP, MINI_DENOISER, MINI_VQGAN

P_IMAGE = 0.2  # samples conditioned on the CLIP image embedding
P_UNCOND = 0.1  # samples conditioned on zeros
LABEL_SMOOTHING = 0.1


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
) -> Path:
    """Train the denoiser against frozen VQGAN and CLIP checkpoints; save `out/denoiser.safetensors`."""
    dev = setup_device(device)
    torch.manual_seed(seed)
    vq = VQGAN(vqgan_config).to(dev)
    load_frozen_part(vqgan, vq, vqgan_config)
    vocab = world.vocabulary()
    encoder = ClipEncoder(clip_config, vocab)
    load_frozen_part(clip, encoder.model, clip_config)
    encoder.to(dev)
    model = Denoiser(config).to(dev).train()
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
    data = batches(SceneStream(batch, tokenizer, seed=seed, p_drop=0.2), dev)
    run = Run("denoiser", out, steps=steps, minutes=minutes)
    for _, b in zip(run, data, strict=False):
        cur_lr = run.set_lr(opt, lr)
        images = world.render(b.scenes)
        n = images.shape[0]
        with torch.no_grad():  # in full precision, as served
            tokens = vq.encode(images.contiguous(memory_format=torch.channels_last))  # (B, h, w)
            text = encoder.model.encode_text(b.tokens)  # (B, c_clip)
            image = encoder.encode_image(images)
        u = torch.rand(n, 1, device=dev)
        cond = torch.where(u < P_IMAGE, image, text)
        cond = torch.where(u > 1 - P_UNCOND, torch.zeros_like(cond), cond)
        r = torch.rand(n, device=dev)
        seeds = torch.randint(-(2**63), 2**63 - 1, (n,), device=dev)  # the noise of Paella v1's training
        noisy = noise_tokens(tokens, r, seeds=seeds, step=0, num_labels=config.num_labels)
        with autocast(dev):
            logits = model(noisy, cond, r)  # (B, num_labels, h, w)
        loss = F.cross_entropy(logits.float(), tokens, label_smoothing=LABEL_SMOOTHING)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            d = min(ema_decay, (1 + run.step) / (10 + run.step))
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - d)
        if run.step % run.log_every == 0:
            acc = (logits.argmax(1) == tokens).float().mean()
            run.log(loss=loss, acc=acc, lr=cur_lr)
    summary = run.summary(dev) | {"batch": batch, "lr": lr, "ema_decay": ema_decay}
    print(f"denoiser: {summary}")
    path = out / "denoiser.safetensors"
    save_part(path, ema, {"config": dataclasses.asdict(config), "train": summary})
    return path
