"""The EDM U-Net F(x, c_noise), the PyTorch twin of `src/models/unet.rs`.

Same architecture and the same `state_dict` names, so a checkpoint saved from this module loads
in mapga unchanged (see the tensor-name table in the Rust module's documentation). The only
difference: here `c_noise` is one value per sample (training draws a sigma per image); the Rust
forward takes one value for the whole batch (a solver evaluates one noise level at a time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

GROUP_NORM_EPS = 1e-5


@dataclass
class UNetConfig:
    """The card's `hyperparameters` (defaults as in the Rust `UNetConfig`)."""

    in_channels: int = 1
    channels: int = 32
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 4])
    num_res_blocks: int = 2
    attention: bool = False
    groups: int = 8
    embedding: int = 0  # 0 means 4 x channels

    def __post_init__(self) -> None:
        if self.embedding == 0:
            self.embedding = 4 * self.channels

    def hyperparameters(self) -> dict:
        """The card's `hyperparameters` map (everything but the image channels)."""
        return {
            "channels": self.channels,
            "channel_mult": list(self.channel_mult),
            "num_res_blocks": self.num_res_blocks,
            "attention": self.attention,
            "groups": self.groups,
            "embedding": self.embedding,
        }


def conv3x3(i: int, o: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(i, o, 3, stride=stride, padding=1)


class ResBlock(nn.Module):
    """`skip(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + emb_proj(emb))))`."""

    def __init__(self, i: int, o: int, config: UNetConfig) -> None:
        super().__init__()
        g = config.groups
        self.norm1 = nn.GroupNorm(g, i, eps=GROUP_NORM_EPS)
        self.conv1 = conv3x3(i, o)
        self.emb_proj = nn.Linear(config.embedding, o)
        self.norm2 = nn.GroupNorm(g, o, eps=GROUP_NORM_EPS)
        self.conv2 = conv3x3(o, o)
        self.skip = nn.Conv2d(i, o, 1) if i != o else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.skip(x) if self.skip is not None else x) + h


class Attention(nn.Module):
    """Single-head self-attention over the pixels, with a residual connection."""

    def __init__(self, c: int, config: UNetConfig) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(config.groups, c, eps=GROUP_NORM_EPS)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3 * c, h * w).split(c, dim=1)
        weights = torch.softmax(q.transpose(1, 2) @ k / c**0.5, dim=-1)  # [b, i, j]
        out = v @ weights.transpose(1, 2)  # [b, c, i]
        return x + self.proj(out.reshape(b, c, h, w))


class Embedding(nn.Module):
    """The noise embedding: sinusoidal features, then two linear layers with SiLU."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.channels = config.channels
        self.linear_1 = nn.Linear(config.channels, config.embedding)
        self.linear_2 = nn.Linear(config.embedding, config.embedding)

    def features(self, c_noise: torch.Tensor) -> torch.Tensor:
        half = self.channels // 2
        j = torch.arange(half, dtype=torch.float64, device=c_noise.device)
        freqs = (1.0 / 10000.0) ** (j / half)
        angles = c_noise.to(torch.float64)[:, None] * freqs[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=1)

    def forward(self, c_noise: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        emb = F.silu(self.linear_1(self.features(c_noise).to(dtype)))
        return F.silu(self.linear_2(emb))


class Level(nn.Module):
    """One encoder or decoder level: residual blocks and an optional resampling conv."""

    def __init__(self, res: list[ResBlock], resample_name: str | None, conv: nn.Conv2d | None):
        super().__init__()
        self.res = nn.ModuleList(res)
        if resample_name is not None:
            holder = nn.Module()
            holder.conv = conv
            setattr(self, resample_name, holder)
        self.resample_name = resample_name

    def resample(self) -> nn.Conv2d | None:
        if self.resample_name is None:
            return None
        return getattr(self, self.resample_name).conv


class UNet(nn.Module):
    """F(x, c_noise) for `x` of shape [B, C, H, W] and `c_noise` of shape [B]."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c0 = config.channels
        levels = len(config.channel_mult)
        self.emb = Embedding(config)
        self.conv_in = conv3x3(config.in_channels, c0)

        skips = [c0]
        cur = c0
        down = []
        for lvl in range(levels):
            out = c0 * config.channel_mult[lvl]
            res = []
            for _ in range(config.num_res_blocks):
                res.append(ResBlock(cur, out, config))
                cur = out
                skips.append(cur)
            if lvl + 1 < levels:
                skips.append(cur)
                down.append(Level(res, "downsample", conv3x3(cur, cur, stride=2)))
            else:
                down.append(Level(res, None, None))
        self.down = nn.ModuleList(down)

        self.mid = nn.Module()
        self.mid.res = nn.ModuleList([ResBlock(cur, cur, config), ResBlock(cur, cur, config)])
        self.mid.attn = Attention(cur, config) if config.attention else None

        up: dict[str, Level] = {}
        for lvl in reversed(range(levels)):
            out = c0 * config.channel_mult[lvl]
            res = []
            for _ in range(config.num_res_blocks + 1):
                res.append(ResBlock(cur + skips.pop(), out, config))
                cur = out
            if lvl > 0:
                up[str(lvl)] = Level(res, "upsample", conv3x3(cur, cur))
            else:
                up[str(lvl)] = Level(res, None, None)
        # Named by level index, like the Rust module (`up.{l}`), applied from the last level.
        self.up = nn.ModuleDict(up)
        self.norm_out = nn.GroupNorm(config.groups, cur, eps=GROUP_NORM_EPS)
        self.conv_out = conv3x3(cur, config.in_channels)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.emb(c_noise, x.dtype)
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for block in level.res:
                h = block(h, emb)
                skips.append(h)
            conv = level.resample()
            if conv is not None:
                h = conv(h)
                skips.append(h)
        h = self.mid.res[0](h, emb)
        if self.mid.attn is not None:
            h = self.mid.attn(h)
        h = self.mid.res[1](h, emb)
        for lvl in reversed(range(len(self.config.channel_mult))):
            level = self.up[str(lvl)]
            for block in level.res:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            conv = level.resample()
            if conv is not None:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
                th, tw = skips[-1].shape[2:]
                h = conv(h[:, :, :th, :tw])
        return self.conv_out(F.silu(self.norm_out(h)))
