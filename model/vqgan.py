"""The f8 VQGAN of Paella v1: taming-transformers' Encoder/Decoder with a Gumbel quantizer.

Parameter names and shapes follow ruDALL-E's `gumbelf8-sber` checkpoint (Esser et al. 2021,
Gumbel quantizer after Jang et al. 2016). Serving quantizes by argmax, not by a Gumbel sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import VQGANConfig


class ChannelNorm(nn.Module):
    """LayerNorm over the channels at each position, with GroupNorm's parameter names and shapes.

    No statistic spans positions, so the network gains nothing from a spot of huge activations that
    steers a whole picture's normalisation: the "droplet" artefact of Karras et al. 2020 (StyleGAN2,
    section 2.1), which GroupNorm provoked on the flat pictures paella-mini is trained on.
    """

    def __init__(self, c: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x: Tensor) -> Tensor:
        h = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return h.permute(0, 3, 1, 2)


def Normalize(c: int, norm: str = "group") -> nn.Module:
    """GroupNorm with 32 groups, as taming-transformers uses everywhere; or `ChannelNorm` ("channel")."""
    if norm == "channel":
        return ChannelNorm(c)
    return nn.GroupNorm(num_groups=32, num_channels=c, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """Two (norm, swish, conv 3x3) stages with a residual, 1x1 `nin_shortcut` when widths differ."""

    def __init__(self, c_in: int, c_out: int, dropout: float = 0.0, norm: str = "group"):
        super().__init__()
        self.norm1 = Normalize(c_in, norm)
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        self.norm2 = Normalize(c_out, norm)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, kernel_size=1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, scale c^-0.5, with a residual."""

    def __init__(self, c: int, norm: str = "group"):
        super().__init__()
        self.norm = Normalize(c, norm)
        self.q = nn.Conv2d(c, c, kernel_size=1)
        self.k = nn.Conv2d(c, c, kernel_size=1)
        self.v = nn.Conv2d(c, c, kernel_size=1)
        self.proj_out = nn.Conv2d(c, c, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (conv(h).flatten(2).transpose(1, 2) for conv in (self.q, self.k, self.v))  # (B, HW, C)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C)
        h = h.transpose(1, 2).reshape(B, C, H, W)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """Halves the resolution: zero-pad right and bottom by one, then conv 3x3 with stride 2."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Doubles the resolution: nearest-neighbour, then conv 3x3."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution of the encoder or decoder: ResnetBlocks, each followed by attention if any."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, attention: bool, dropout: float, norm: str):
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(c_in if i == 0 else c_out, c_out, dropout, norm) for i in range(n_blocks)
        )
        self.attn = nn.ModuleList(AttnBlock(c_out, norm) for _ in range(n_blocks if attention else 0))

    def forward(self, x: Tensor) -> Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if self.attn:
                x = self.attn[i](x)
        return x


class DownLevel(Level):
    """An encoder level, followed by a Downsample except at the deepest level."""

    def __init__(
        self, c_in: int, c_out: int, n_blocks: int, attention: bool, dropout: float, norm: str, last: bool
    ):
        super().__init__(c_in, c_out, n_blocks, attention, dropout, norm)
        self.downsample = nn.Identity() if last else Downsample(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(super().forward(x))


class UpLevel(Level):
    """A decoder level, followed by an Upsample except at the shallowest level."""

    def __init__(
        self, c_in: int, c_out: int, n_blocks: int, attention: bool, dropout: float, norm: str, last: bool
    ):
        super().__init__(c_in, c_out, n_blocks, attention, dropout, norm)
        self.upsample = nn.Identity() if last else Upsample(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.upsample(super().forward(x))


class Middle(nn.Module):
    """ResnetBlock, attention, ResnetBlock at the lowest resolution."""

    def __init__(self, c: int, dropout: float, norm: str):
        super().__init__()
        self.block_1 = ResnetBlock(c, c, dropout, norm)
        self.attn_1 = AttnBlock(c, norm)
        self.block_2 = ResnetBlock(c, c, dropout, norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) in [-1, 1] to features (B, z_channels, H/f, W/f)."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        widths = [cfg.ch * m for m in (1, *cfg.ch_mult)]
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, kernel_size=3, padding=1)
        self.down = nn.ModuleList()
        res = cfg.resolution  # attention placement counts from the config's resolution, not the input's
        for i in range(len(cfg.ch_mult)):
            attention, last = res in cfg.attn_resolutions, i == len(cfg.ch_mult) - 1
            self.down.append(
                DownLevel(
                    widths[i], widths[i + 1], cfg.num_res_blocks, attention, cfg.dropout, cfg.norm, last
                )
            )
            res //= 2
        self.mid = Middle(widths[-1], cfg.dropout, cfg.norm)
        self.norm_out = Normalize(widths[-1], cfg.norm)
        c_z = 2 * cfg.z_channels if cfg.double_z else cfg.z_channels
        self.conv_out = nn.Conv2d(widths[-1], c_z, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)  # (B, ch, H, W)
        for level in self.down:
            x = level(x)
        x = self.mid(x)  # (B, ch * ch_mult[-1], H/f, W/f)
        return self.conv_out(F.silu(self.norm_out(x)))  # (B, z_channels, H/f, W/f)


class Decoder(nn.Module):
    """Features (B, z_channels, h, w) to an image (B, out_ch, h*f, w*f), roughly in [-1, 1]."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        n = len(cfg.ch_mult)
        c = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, c, kernel_size=3, padding=1)
        self.mid = Middle(c, cfg.dropout, cfg.norm)
        levels: list[UpLevel] = []
        res = cfg.resolution // 2 ** (n - 1)
        for i in reversed(range(n)):
            c_out = cfg.ch * cfg.ch_mult[i]
            attention = res in cfg.attn_resolutions
            up = UpLevel(c, c_out, cfg.num_res_blocks + 1, attention, cfg.dropout, cfg.norm, last=i == 0)
            levels.insert(0, up)
            res *= 2
            c = c_out
        self.up = nn.ModuleList(levels)  # indexed by level, shallow first; used deepest first
        self.norm_out = Normalize(c, cfg.norm)
        self.conv_out = nn.Conv2d(c, cfg.out_ch, kernel_size=3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid(self.conv_in(z))  # (B, ch * ch_mult[-1], h, w)
        for level in reversed(self.up):
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))  # (B, out_ch, h*f, w*f)


class GumbelQuantizer(nn.Module):
    """Code logits from features (`proj`) and the codebook (`embed`)."""

    def __init__(self, c_in: int, embed_dim: int, n_embed: int):
        super().__init__()
        self.proj = nn.Conv2d(c_in, n_embed, kernel_size=1)
        self.embed = nn.Embedding(n_embed, embed_dim)

    def mix(self, weights: Tensor) -> Tensor:
        """Codebook rows weighted by `weights` (B, n_embed, h, w), e.g. a Gumbel-softmax sample."""
        return torch.einsum("bnhw,nd->bdhw", weights, self.embed.weight)  # (B, embed_dim, h, w)


class VQGAN(nn.Module):
    """Images in [0, 1] to token grids and back, downscaling by `config.downscale` per side."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = GumbelQuantizer(config.embed_dim, config.embed_dim, config.n_embed)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, kernel_size=1)

    def code_logits(self, images: Tensor) -> Tensor:
        """Logits over the codebook (B, n_embed, H/f, W/f) for images (B, 3, H, W) in [0, 1]."""
        z = self.quant_conv(self.encoder(images * 2 - 1))  # (B, embed_dim, H/f, W/f)
        return self.quantize.proj(z)

    def encode(self, images: Tensor) -> Tensor:
        """Token indices (B, H/f, W/f), int64, by argmax over the code logits."""
        return self.code_logits(images).argmax(dim=1)

    def decode_embeddings(self, z: Tensor) -> Tensor:
        """Images (B, 3, h*f, w*f) in [0, 1] from codebook vectors (B, embed_dim, h, w)."""
        x = self.decoder(self.post_quant_conv(z))
        return (x.clamp(-1, 1) + 1) / 2

    def decode(self, indices: Tensor) -> Tensor:
        """Images (B, 3, h*f, w*f) in [0, 1] from token indices (B, h, w)."""
        z = self.quantize.embed(indices).permute(0, 3, 1, 2)  # (B, embed_dim, h, w)
        return self.decode_embeddings(z)
