"""The Paella v1 token denoiser: a convolutional U-Net over VQGAN tokens (Rampas et al. 2022).

Parameter names and shapes follow the published `DenoiseUNet`, so its checkpoint loads as is.
Features travel as (B, C, H, W) views of channels-last memory: the convolutions see NCHW, the
norm and the channelwise MLP see the (B, H, W, C) view, so a block permutes without reordering.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import DenoiserConfig


class ModulatedLayerNorm(nn.Module):
    """LayerNorm over channels whose output is scaled and shifted by the mapped condition `w`."""

    def __init__(self, c: int, eps: float = 1e-6):
        super().__init__()
        self.gamma = nn.Parameter(torch.randn(1, 1, 1))
        self.beta = nn.Parameter(torch.randn(1, 1, 1))
        self.ln = nn.LayerNorm(c, eps=eps)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        # gamma * w * (x_hat * a + b) + beta * w, regrouped into one multiply-add over the map
        scale = self.gamma * w * self.ln.weight  # (B, 1, 1, C) or (B, H, W, C)
        shift = w * (self.gamma * self.ln.bias + self.beta)
        x_hat = F.layer_norm(x, self.ln.normalized_shape, eps=self.ln.eps)  # (B, H, W, C)
        return torch.addcmul(shift, x_hat, scale)


class ResBlock(nn.Module):
    """Depthwise conv, condition-modulated LayerNorm, channelwise MLP, layer scale, residual."""

    def __init__(self, c: int, c_cond: int, c_skip: int = 0, out_scale: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((c,), 1e-6))  # layer scale
        self.depthwise = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, kernel_size=3, groups=c))
        self.ln = ModulatedLayerNorm(c)
        out = nn.Linear(4 * c, c)
        with torch.no_grad():
            out.weight.mul_(out_scale)
        self.channelwise = nn.Sequential(nn.Linear(c + c_skip, 4 * c), nn.GELU(), out)
        self.cond_mapper = nn.Linear(c_cond, c)

    def forward(self, x: Tensor, s: Tensor, skip: Tensor | None = None) -> Tensor:
        # x (B, C, H, W); s (B, h, w, c_cond) with h = w = 1 for a single vector; skip (B, C_skip, H, W)
        H, W = x.shape[-2:]
        w = self.cond_mapper(s)  # (B, h, w, C)
        if w.shape[1:3] not in ((1, 1), (H, W)):
            w = F.interpolate(w.permute(0, 3, 1, 2), size=(H, W), mode="bilinear", align_corners=False)
            w = w.permute(0, 2, 3, 1)  # (B, H, W, C)
        h = self.depthwise(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        h = self.ln(h, w)
        if skip is not None:
            h = torch.cat([h, skip.permute(0, 2, 3, 1)], dim=-1)  # (B, H, W, C + C_skip)
        h = self.channelwise(h) * self.gamma  # (B, H, W, C)
        return x + h.permute(0, 3, 1, 2)


def upsample_by_matmul(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """conv_transpose2d(x, weight, bias, stride 2, padding 1) for a 4x4 kernel, as one matrix product over
    the input's 2x2 windows: each window holds the four input pixels, and four of the sixteen kernel taps,
    that make the 2x2 output pixels it covers. x (B, C_in, H, W), weight (C_in, C_out, 4, 4)."""
    B, c_in, H, W = x.shape
    c_out = weight.shape[1]
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (B, H+2, W+2, C_in)
    # window (m, n) covers input pixels (m-1, n-1) to (m, n); its pixel (dy, dx) reaches output pixel
    # (2m-1+a, 2n-1+b) through kernel tap (2 i + a, 2 j + b) with (i, j) = (1 - dy, 1 - dx)
    windows = torch.cat(
        [padded[:, 1 - i : H + 2 - i, 1 - j : W + 2 - j] for i in (0, 1) for j in (0, 1)], dim=-1
    )  # (B, H+1, W+1, 4 C_in), its channels ordered (i, j, C_in)
    taps = weight.view(c_in, c_out, 2, 2, 2, 2)  # (C_in, C_out, i, a, j, b)
    taps = taps.permute(3, 5, 1, 2, 4, 0).reshape(4 * c_out, 4 * c_in)  # ((a, b, C_out), (i, j, C_in))
    out = F.linear(windows, taps, None if bias is None else bias.repeat(4)).view(B, H + 1, W + 1, 2, 2, c_out)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(B, 2 * H + 2, 2 * W + 2, c_out)  # output row 2m-1+a
    return out[:, 1:-1, 1:-1].permute(0, 3, 1, 2)  # (B, C_out, 2H, 2W), channels-last memory


class Upsample(nn.ConvTranspose2d):
    """ConvTranspose2d(c_in, c_out, kernel 4, stride 2, padding 1); on CUDA computed by `upsample_by_matmul`.

    cuDNN picks a transposed convolution's algorithm, and with it the order of its sums, by the batch size:
    a row's logits, and now and then its tokens, depended on the rows beside it (the first of the denoiser's
    layers that did, in an H200 run). A matrix product's rows do not, as the denoiser's other products and
    convolutions don't. On a CPU oneDNN's transposed convolution stays: float32 products there round by
    batch size anyway, and it is faster at paella-mini's sizes (`benchmarks/README.md`).
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, kernel_size=4, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]  # no output_size: always twice the input
        if not x.is_cuda:
            return super().forward(x)
        return upsample_by_matmul(x, self.weight, self.bias)


class Denoiser(nn.Module):
    """Predicts logits over the codebook at every token position from noised tokens, CLIP and r."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        c_levels, c_cond = config.c_levels, config.c_cond
        self.embedding = nn.Embedding(config.num_labels, c_levels[0])

        self.down_blocks = nn.ModuleList()
        for i, n in enumerate(config.down_levels):
            down: list[nn.Module] = []
            if i > 0:
                down.append(nn.Conv2d(c_levels[i - 1], c_levels[i], kernel_size=4, stride=2, padding=1))
            down += [
                ResBlock(c_levels[i], c_cond, 0, math.sqrt(1 / sum(config.down_levels))) for _ in range(n)
            ]
            self.down_blocks.append(nn.ModuleList(down))

        self.up_blocks = nn.ModuleList()
        deep_to_shallow = c_levels[::-1]
        for i, n in enumerate(config.up_levels):
            c = deep_to_shallow[i]
            up: list[nn.Module] = [
                ResBlock(c, c_cond, c if (j == 0 and i > 0) else 0, math.sqrt(1 / sum(config.up_levels)))
                for j in range(n)
            ]
            if i < len(config.up_levels) - 1:
                up.append(Upsample(c, deep_to_shallow[i + 1]))
            self.up_blocks.append(nn.ModuleList(up))

        self.clf = nn.Conv2d(c_levels[0], config.num_labels, kernel_size=1)

    def r_embedding(self, r: Tensor, max_positions: int = 10000) -> Tensor:
        """Sinusoidal embedding of the noise level cos(r * pi / 2) * 10000, sin half first."""
        r = (r.float() * torch.pi / 2).cos() * max_positions  # (B,)
        half = self.config.c_r // 2
        freqs = torch.arange(half, device=r.device).float().mul(-math.log(max_positions) / (half - 1)).exp()
        emb = r[:, None] * freqs[None, :]  # (B, c_r // 2)
        emb = torch.cat([emb.sin(), emb.cos()], dim=1)  # (B, c_r - c_r % 2)
        return F.pad(emb, (0, self.config.c_r % 2))

    def condition(self, clip: Tensor, r: Tensor) -> Tensor:
        """The per-sample condition s = [clip, r_embedding] as a channels-last (B, h, w, c_cond) map."""
        dtype = self.embedding.weight.dtype
        r_emb = self.r_embedding(r).to(dtype)  # (B, c_r)
        if clip.dim() == 2:
            return torch.cat([clip.to(dtype), r_emb], dim=1)[:, None, None, :]  # (B, 1, 1, c_cond)
        B, _, h, w = clip.shape
        clip = clip.to(dtype).permute(0, 2, 3, 1)  # (B, h, w, c_clip)
        return torch.cat([clip, r_emb[:, None, None, :].expand(B, h, w, -1)], dim=-1)  # (B, h, w, c_cond)

    def forward(self, tokens: Tensor, clip: Tensor, r: Tensor) -> Tensor:
        """Logits (B, num_labels, H, W) for tokens (B, H, W), clip (B, c_clip) or (B, c_clip, h, w), r (B,).

        H and W must be multiples of `config.grid_multiple`, at least twice it. A spatial condition is resized
        bilinearly to every level's feature size. The logits are a channels-last view.
        """
        m, (H, W) = self.config.grid_multiple, tokens.shape[-2:]
        if H % m or W % m or min(H, W) < 2 * m:  # the deepest level's reflection padding needs 2 rows
            raise ValueError(f"token grid {(H, W)} must be multiples of {m}, at least {2 * m}, on each side")
        s = self.condition(clip, r)
        x = self.embedding(tokens).permute(0, 3, 1, 2)  # (B, C0, H, W)

        levels: list[Tensor] = []
        for down in self.down_blocks:
            for block in down.children():
                x = block(x, s) if isinstance(block, ResBlock) else block(x)
            levels.append(x)

        levels.pop()  # the deepest output is where the up path starts
        for i, up in enumerate(self.up_blocks):
            for j, block in enumerate(up.children()):
                if isinstance(block, ResBlock):
                    x = block(x, s, levels.pop() if (i > 0 and j == 0) else None)
                else:
                    x = block(x)
        return self.clf(x)  # (B, num_labels, H, W)
