"""A class-conditional U-Net for small images (eps-prediction), after Ho et al. 2020 and the
scale-shift conditioning of Nichol & Dhariwal 2021 (arXiv 2102.09672).

``UNet(cfg)(x, t, y)``: x (B, C, H, W) in model space ([-1, 1]), t (B,) int64 timesteps, y (B,) int64
labels where ``y == cfg.num_classes`` is the null label (classifier-free guidance). Returns eps (B, C, H, W).
Timestep and class embeddings are summed and condition every residual block through a GroupNorm
scale and shift.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .config import UNET_PRESETS, UNetConfig


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of integer timesteps (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    g = math.gcd(ch, groups)
    return nn.GroupNorm(g, ch)


def norm_silu(
    norm: nn.GroupNorm,
    x: torch.Tensor,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    fused: bool = False,
) -> torch.Tensor:
    """``silu(norm(x) * (1 + scale) + shift)`` (scale, shift (B, C, 1, 1) or absent): with ``fused`` and
    a tensor the kernel takes (float32, or bfloat16 as under CPU autocast), one ddmini kernel
    (``kernels.group_norm_silu``); else the eager ops."""
    if fused and kernels.group_norm_silu_fits(x):
        return kernels.group_norm_silu(
            x,
            norm.num_groups,
            norm.weight,
            norm.bias,
            None if scale is None else scale.flatten(1),
            None if shift is None else shift.flatten(1),
            eps=norm.eps,
        )
    h = norm(x)
    if scale is not None:
        h = h * (1 + scale) + shift
    return F.silu(h)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = _norm(cout, groups)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.fused_norm = False  # UNet.set_fused_norm

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(norm_silu(self.norm1, x, fused=self.fused_norm))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = norm_silu(self.norm2, h, scale, shift, fused=self.fused_norm)
        h = self.conv2(self.drop(h))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, ch: int, heads: int, groups: int):
        super().__init__()
        self.heads = max(1, math.gcd(ch, heads))
        self.norm = _norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        ch0 = cfg.base_channels
        emb_dim = 4 * ch0
        self.time_mlp = nn.Sequential(nn.Linear(ch0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, emb_dim)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch0, 3, padding=1)
        chans = [ch0 * m for m in cfg.channel_mult]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, ch = [ch0], ch0
        for i, c in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, c, emb_dim, cfg.groups, cfg.dropout))
                ch = c
                skips.append(ch)
            self.down.append(blocks)
            if i < len(chans) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1 = ResBlock(ch, ch, emb_dim, cfg.groups, cfg.dropout)
        self.mid_attn = Attention(ch, cfg.num_heads, cfg.groups) if cfg.attention else nn.Identity()
        self.mid2 = ResBlock(ch, ch, emb_dim, cfg.groups, cfg.dropout)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        per_level = cfg.num_res_blocks + 1
        top = cfg.top_blocks or per_level  # fewer at the top leave its first skips (conv_in's first) unused
        for i, c in reversed(list(enumerate(chans))):
            blocks = nn.ModuleList()
            for _ in range(top if i == 0 else per_level):
                blocks.append(ResBlock(ch + skips.pop(), c, emb_dim, cfg.groups, cfg.dropout))
                ch = c
            self.up.append(blocks)
            if i > 0 and cfg.upsample == "shuffle":  # to the next level's channels at a quarter of the pixels
                self.upsample.append(nn.Sequential(nn.Conv2d(ch, 4 * chans[i - 1], 3, padding=1), nn.PixelShuffle(2)))
                ch = chans[i - 1]
            elif i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.norm_out = _norm(ch, cfg.groups)
        self.conv_out = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.fused_norm = False

    def set_fused_norm(self, on: bool = True) -> UNet:
        """Run every GroupNorm + SiLU pair (with the blocks' scale and shift) as one ddmini kernel where it
        takes the tensors (float32 or bfloat16 on a CPU): the same function to rounding (under bf16 autocast
        the eager ops' float32 result is rounded to bfloat16 by the next convolution; the kernel rounds it
        once itself), a quarter to a third of the eager ops' time at the 28 x 28 level (bench/kernels.py).
        Not saved with the weights."""
        self.fused_norm = bool(on)
        for m in self.modules():
            if isinstance(m, ResBlock):
                m.fused_norm = self.fused_norm
        return self

    @property
    def null_label(self) -> int:
        return self.cfg.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.cfg.base_channels)) + self.class_emb(y)
        emb = F.silu(emb)
        h = self.conv_in(x)
        hs = [h]
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            if i < len(self.upsample):
                up = h if self.cfg.upsample == "shuffle" else F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = self.upsample[i](up)
        return self.conv_out(norm_silu(self.norm_out, h, fused=self.fused_norm))


def build(cfg: UNetConfig | str) -> UNet:
    """A U-Net from a config or a preset name ("small", "paper", "tiny")."""
    if isinstance(cfg, str):
        if cfg not in UNET_PRESETS:
            raise ValueError(f"unet preset must be one of {', '.join(UNET_PRESETS)}; got {cfg!r}")
        from dataclasses import replace

        cfg = replace(UNET_PRESETS[cfg])
    return UNet(cfg)


def describe(cfg: UNetConfig) -> str:
    """The U-Net preset ``cfg`` is the size of ("custom" otherwise) and its parameter count, in a few words."""

    def shape(c: UNetConfig) -> tuple:
        return c.base_channels, c.channel_mult, c.upsample, c.top_blocks

    name = next((k for k, v in UNET_PRESETS.items() if shape(v) == shape(cfg)), "custom")
    return f"U-Net '{name}': {num_parameters(UNet(cfg)):,} parameters"


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
