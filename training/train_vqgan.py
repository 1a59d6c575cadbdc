"""Train the small VQGAN on shapes-world pictures: L1 + MSE reconstruction through a Gumbel quantizer
or finite scalar quantization (`training.fsq`), stored in v1's Gumbel layout either way.

The quantizer follows taming-transformers' GumbelQuantize (Jang et al. 2016): a straight-through
Gumbel-softmax sample of the code logits, temperature annealed from 1 to 1/16, with a small KL to
the uniform code distribution. Serving quantizes by argmax, so the last stretch of training feeds
the argmax code forward (straight-through to the softmax) to train exactly what is served. The
pictures are flat colours, so no adversarial or perceptual loss is needed.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from model.config import VQGANConfig
from model.vqgan import VQGAN
from training import world
from training.fsq import FSQ
from training.loop import Run, autocast, load_part, optimizer_step, save_part, setup_device
from training.mini import MINI_VQGAN

TAU_START, TAU_END = 1.0, 1.0 / 16
ANNEAL_UNTIL = 0.6  # progress at which the temperature reaches TAU_END
ARGMAX_FROM = 0.75  # progress from which the forward pass uses the argmax code
KL_WEIGHT = 1e-4
FSQ_LEVELS = {1024: (4, 4, 4, 4, 4)}  # codebook size -> levels per dimension
TOKEN_NOISE_FROM = 0.5  # progress from which an FSQ run with token noise swaps tokens


def usage_loss(logits: torch.Tensor) -> torch.Tensor:
    """The code-usage term (as in lookup-free quantization's entropy loss), normalised to [-1, 1]: the mean
    entropy of each position's code distribution (sharp choices) minus the entropy of the batch's mean
    distribution (many codes in use), both over log(n_embed)."""
    q = logits.float().softmax(1)  # (B, n, h, w)
    per_position = -(q * q.clamp_min(1e-10).log()).sum(1).mean()
    marginal = q.mean((0, 2, 3))
    in_use = -(marginal * marginal.clamp_min(1e-10).log()).sum()
    return (per_position - in_use) / math.log(logits.shape[1])


@torch.no_grad()
def reset_dead_codes(
    vqgan: VQGAN, used: torch.Tensor, generator: torch.Generator, noise: float = 0.01
) -> int:
    """Give every code that `used` (n_embed,) bool marks unused a copy of a used code, slightly perturbed and
    a little less likely, so the next steps split that code's pictures between the two. Returns how many
    codes were reset."""
    dead = (~used).nonzero().flatten()
    alive = used.nonzero().flatten()
    if len(dead) == 0 or len(alive) == 0:
        return 0
    pick = alive[torch.randint(len(alive), (len(dead),), generator=generator, device=alive.device)]
    q = vqgan.quantize
    for table in (q.proj.weight, q.embed.weight):
        rows = table[pick]
        jitter = torch.randn(rows.shape, generator=generator, device=rows.device, dtype=rows.dtype)
        table[dead] = rows + noise * rows.abs().mean() * jitter
    if q.proj.bias is not None:
        q.proj.bias[dead] = q.proj.bias[pick] - 1.0
    return len(dead)


def swap_tokens(q: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Quantized features (B, c, h, w) with `share` of the positions in the second half of the batch
    replaced by the features of random positions of the batch (no gradient through those): tokens as a
    sampler may leave them, to be decoded to the clean picture."""
    b, c, h, w = q.shape
    first, second = q[: b // 2], q[b // 2 :]
    swap = torch.rand(len(second), 1, h, w, device=q.device, generator=generator) < share
    rows = q.detach().permute(0, 2, 3, 1).reshape(-1, c)
    pick = torch.randint(len(rows), (len(second) * h * w,), device=q.device, generator=generator)
    donors = rows[pick].view(len(second), h, w, c).permute(0, 3, 1, 2)
    return torch.cat([first, torch.where(swap, donors, second)])


def temperature(progress: float) -> float:
    """Exponential annealing from TAU_START to TAU_END over the first ANNEAL_UNTIL of the budget."""
    t = min(progress / ANNEAL_UNTIL, 1.0)
    return TAU_START * (TAU_END / TAU_START) ** t


def quantize_st(logits: torch.Tensor, tau: float, argmax: bool) -> torch.Tensor:
    """One-hot codes (B, n, h, w) with straight-through gradients: a Gumbel sample, or the argmax."""
    if not argmax:
        return F.gumbel_softmax(logits, tau=tau, hard=True, dim=1)
    soft = (logits / tau).softmax(1)
    hard = F.one_hot(logits.argmax(1), logits.shape[1]).permute(0, 3, 1, 2).to(soft.dtype)
    return hard - soft.detach() + soft


@torch.no_grad()
def reconstruction_psnr(vqgan: VQGAN, images: torch.Tensor, batch: int = 64) -> float:
    """PSNR in dB of argmax encode -> decode over `images` (B, 3, H, W) in [0, 1], on 8-bit pixels."""
    errors = []
    for chunk in images.split(batch):
        recon = vqgan.decode(vqgan.encode(chunk)).float()
        quantized = (recon * 255).round() / 255
        errors.append(((quantized - chunk) ** 2).flatten(1).mean(1))
    mse = torch.cat(errors).mean().clamp_min(1e-10)
    return float(10 * torch.log10(1 / mse))


def _pictures(batch: int, g: torch.Generator, dev: torch.device) -> torch.Tensor:
    """A fresh batch of shapes-world pictures (B, 3, 128, 128) in [0, 1], channels-last."""
    images = world.render(world.sample_scenes(batch, g, device=dev))
    return images.contiguous(memory_format=torch.channels_last)


def _reconstruction_errors(recon: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 and MSE of a decoder output in [-1, 1] against pictures in [0, 1]."""
    err = recon.float() - (images * 2 - 1)
    return err.abs().mean(), err.pow(2).mean()


def _batch_psnr(mse: torch.Tensor) -> float:
    """PSNR in dB of an MSE measured on [-1, 1] pixels (for the loss log)."""
    return 10 * math.log10(4 / max(float(mse.detach()), 1e-10))


def _fresh_check(vqgan: VQGAN, n: int, seed: int, dev: torch.device) -> tuple[float, float]:
    """The final check on `n` pictures training never drew: argmax-code PSNR and the share of the
    codebook their codes use."""
    vqgan.eval()
    images = world.render(world.sample_scenes(n, torch.Generator(dev).manual_seed(seed), device=dev))
    with torch.no_grad():
        codes = torch.cat([vqgan.encode(chunk) for chunk in images.split(64)])
    return reconstruction_psnr(vqgan, images), codes.unique().numel() / vqgan.config.n_embed


def train_vqgan(
    out: Path,
    *,
    device: str = "cpu",
    steps: int | None = None,
    minutes: float | None = None,
    batch: int = 128,
    lr: float = 6e-4,
    config: VQGANConfig = MINI_VQGAN,
    seed: int = 0,
    check_pictures: int = 512,
    usage_weight: float = 0.0,
    reset_every: int = 0,
    quantizer: str = "gumbel",
    token_noise: float = 0.0,
) -> Path:
    """Train a VQGAN from scratch and save `out/vqgan.safetensors`; returns its path.

    `quantizer` "gumbel" trains v1's Gumbel quantizer; "fsq" trains finite scalar quantization
    (`training.fsq`) and stores it in the Gumbel layout. For "gumbel", `usage_weight` adds `usage_loss`
    (sharp per position, many codes over the batch) and `reset_every` > 0 re-seeds the codes no argmax
    picked in that many steps from used ones (`reset_dead_codes`), until the forward pass switches to
    argmax codes. For "fsq", `token_noise` > 0 swaps that share of the tokens in half of each batch from
    TOKEN_NOISE_FROM of the budget on (`swap_tokens`), so the decoder learns to mend the odd wrong
    token a sampler leaves while the encoder still trains on the clean half. The saved summary holds
    the argmax-code PSNR on `check_pictures` fresh pictures and the share of the codebook they use.
    """
    if quantizer not in ("gumbel", "fsq"):
        raise ValueError(f"quantizer must be gumbel or fsq, got {quantizer!r}")
    if token_noise and quantizer != "fsq":
        raise ValueError("token noise from scratch needs the fsq quantizer (for gumbel: refine with --init)")
    dev = setup_device(device)
    torch.manual_seed(seed)
    g = torch.Generator(dev).manual_seed(seed)
    vqgan = VQGAN(config).to(dev).to(memory_format=torch.channels_last)
    fsq = FSQ(config.embed_dim, FSQ_LEVELS[config.n_embed]).to(dev) if quantizer == "fsq" else None
    params = list(vqgan.parameters()) + ([] if fsq is None else list(fsq.parameters()))
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    run = Run("vqgan", out, steps=steps, minutes=minutes)
    picked = torch.zeros(config.n_embed, dtype=torch.bool, device=dev)
    resets = 0
    for _ in run:
        cur_lr = run.set_lr(opt, lr)
        images = _pictures(batch, g, dev)  # (B, 3, 128, 128)
        if fsq is not None:
            with autocast(dev):
                q, index = fsq(vqgan.quant_conv(vqgan.encoder(images * 2 - 1)))
                if token_noise and run.progress >= TOKEN_NOISE_FROM:
                    q = swap_tokens(q, token_noise, g)
                recon = vqgan.decoder(vqgan.post_quant_conv(q))  # (B, 3, H, W) in [-1, 1]
            l1, mse = _reconstruction_errors(recon, images)
            loss = l1 + mse
            optimizer_step(opt, params, loss)
            if run.step % run.log_every == 0:
                used = index.unique().numel()
                run.log(loss=loss, l1=l1, mse=mse, lr=cur_lr, codes_used=used, psnr=_batch_psnr(mse))
            continue
        tau = temperature(run.progress)
        with autocast(dev):
            logits = vqgan.code_logits(images).float()  # (B, n_embed, h, w)
            codes = quantize_st(logits, tau, argmax=run.progress >= ARGMAX_FROM)
            recon = vqgan.decoder(vqgan.post_quant_conv(vqgan.quantize.mix(codes)))  # (B, 3, H, W) in [-1, 1]
        l1, mse = _reconstruction_errors(recon, images)
        qy = logits.softmax(1)
        kl = (qy * (qy * config.n_embed + 1e-10).log()).sum(1).mean()
        loss = l1 + mse + KL_WEIGHT * kl
        if usage_weight:
            loss = loss + usage_weight * usage_loss(logits)
        optimizer_step(opt, vqgan.parameters(), loss)
        if reset_every and run.progress < ARGMAX_FROM:
            picked[logits.argmax(1).flatten()] = True  # no host sync
            if run.step % reset_every == reset_every - 1:
                resets += reset_dead_codes(vqgan, picked, g)
                picked.zero_()
        if run.step % run.log_every == 0:
            used = logits.argmax(1).unique().numel()
            psnr = _batch_psnr(mse)
            run.log(loss=loss, l1=l1, mse=mse, kl=kl, tau=tau, lr=cur_lr, codes_used=used, psnr=psnr)
    summary = run.summary(dev) | {"quantizer": quantizer, "batch": batch, "lr": lr}
    if fsq is not None:
        fsq.export(vqgan.quantize)
        summary |= {"fsq_levels": list(fsq.levels), "token_noise": token_noise}
    else:
        summary |= {"usage_weight": usage_weight, "reset_every": reset_every, "codes_reset": resets}
    psnr, used = _fresh_check(vqgan, check_pictures, seed + 1, dev)
    summary |= {"psnr": round(psnr, 2), "codes_used": round(used, 4)}
    print(f"vqgan: {summary}")
    path = out / "vqgan.safetensors"
    save_part(path, vqgan, {"config": dataclasses.asdict(config), "train": summary})
    return path


def refine_vqgan_decoder(
    out: Path,
    init: Path,
    *,
    device: str = "cpu",
    steps: int | None = None,
    minutes: float | None = None,
    batch: int = 128,
    lr: float = 4e-4,
    token_noise: float = 0.0,
    config: VQGANConfig = MINI_VQGAN,
    seed: int = 1,
    check_pictures: int = 512,
) -> Path:
    """Train only the decoding side (codebook, post_quant_conv, decoder) of a trained VQGAN.

    The encoder and the code projection stay frozen, so every picture keeps its tokens: this can run
    beside the denoiser's training, which learns those same tokens. With `token_noise` > 0, the second
    half of each batch has that share of its tokens swapped for tokens of the batch (`swap_tokens`), and is
    still asked to decode to the clean picture: the decoder learns to mend the odd wrong token a
    sampler leaves, instead of drawing a blot of colour there.
    """
    dev = setup_device(device)
    torch.manual_seed(seed)
    g = torch.Generator(dev).manual_seed(seed)
    vqgan = VQGAN(config)
    state, meta = load_part(init / "vqgan.safetensors")
    vqgan.load_state_dict(state)
    vqgan = vqgan.to(dev).to(memory_format=torch.channels_last)
    vqgan.requires_grad_(False)
    trained = [vqgan.quantize.embed, vqgan.post_quant_conv, vqgan.decoder]
    for module in trained:
        module.requires_grad_(True)
    params = [p for module in trained for p in module.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    run = Run("vqgan-decoder", out, steps=steps, minutes=minutes)
    for _ in run:
        cur_lr = run.set_lr(opt, lr)
        images = _pictures(batch, g, dev)  # (B, 3, 128, 128)
        with torch.no_grad(), autocast(dev):
            codes = vqgan.code_logits(images).float().argmax(1)  # (B, h, w)
        one_hot = F.one_hot(codes, config.n_embed).permute(0, 3, 1, 2).float()  # (B, n, h, w)
        with autocast(dev):
            q = vqgan.quantize.mix(one_hot)
            if token_noise > 0:
                q = swap_tokens(q, token_noise, g)
            recon = vqgan.decoder(vqgan.post_quant_conv(q))  # (B, 3, H, W)
        l1, mse = _reconstruction_errors(recon, images)
        loss = l1 + mse
        optimizer_step(opt, params, loss)
        if run.step % run.log_every == 0:
            run.log(loss=loss, l1=l1, mse=mse, lr=cur_lr, psnr=_batch_psnr(mse))
    psnr, used = _fresh_check(vqgan, check_pictures, seed + 1, dev)
    summary = run.summary(dev) | {"psnr": round(psnr, 2), "codes_used": round(used, 4)}
    summary |= {"batch": batch, "lr": lr}
    if token_noise > 0:
        summary["token_noise"] = token_noise
    print(f"vqgan decoder refinement: {summary}")
    path = out / "vqgan.safetensors"
    save_part(path, vqgan, {"config": meta["config"], "train": meta.get("train", {}), "refine": summary})
    return path
