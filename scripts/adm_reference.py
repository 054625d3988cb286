#!/usr/bin/env python3
"""A small, independent PyTorch reference of the OpenAI ADM / consistency-model U-Net.

This module is the ground truth the Rust loader/forward pass in `mapga` is tested against
(`tests/fixtures/adm/`, written by `scripts/make_adm_fixtures.py`). It was written from the
architecture description in the project's research notes, not copied from OpenAI's code, but
its parameter names and shapes are exactly those of the `UNetModel.state_dict()` of
openai/guided-diffusion and openai/consistency_models, so released checkpoints load into it
with `load_state_dict(strict=True)`.

Conventions (all checked against the official code on identical random weights, see
tests/fixtures/adm/README.md):

* GroupNorm: 32 groups, eps 1e-5, computed in the tensor's own dtype (the official code
  upcasts to float32; for a float64 run this module stays in float64).
* Activation: SiLU. Dropout is omitted (inference only; it has no parameters).
* Time embedding: half = C/2, freq_i = exp(-ln(10000) * i / half), embedding
  [cos(t * freq), sin(t * freq)] (cos first), t real-valued, computed in the model's dtype;
  then Linear(C, 4C) -> SiLU -> Linear(4C, 4C). Class-conditional: + label_emb(y). The sum
  goes to every ResBlock unchanged (each ResBlock's emb_layers starts with its own SiLU).
* ResBlock: in_layers = [GN, SiLU, conv3x3]; with up/down the resampling (nearest x2 /
  2x2 average pool) sits between the SiLU and the conv and is also applied to the skip
  input. emb_layers = [SiLU, Linear(4C, 2*out if scale-shift else out)]. Scale-shift:
  GN(h) * (1 + scale) + shift -> SiLU -> conv3x3 (scale = first half of the chunk).
  Otherwise h + emb -> GN -> SiLU -> conv3x3. Skip: identity or a 1x1 conv on a channel change.
* Attention: qkv = 1x1 conv (C -> 3C) of GN(x). Row order of the 3C rows:
  'flash'  = (three, heads, head_dim): q = rows [0, C), k = [C, 2C), v = [2C, 3C)
             (consistency-model checkpoints);
  'legacy' = (heads, three, head_dim): head h owns rows [3*d*h, 3*d*(h+1)) split q|k|v
             (guided-diffusion ADM checkpoints).
  Per head softmax(q^T k / sqrt(head_dim)) over keys, output channel = head * head_dim + d,
  proj_out 1x1 conv, residual add.
  The consistency-model repo stores qkv/proj_out as Conv2d weights [3C, C, 1, 1]; guided-diffusion
  stores them as Conv1d weights [3C, C, 1]. `attention_conv_dims` (2 or 1) picks the stored
  shape; by default 2 for 'flash' and 1 for 'legacy', matching the released files.
* Layout: input_blocks[0] = conv3x3(in -> ch); per level num_res_blocks x (ResBlock [+ Attn if the
  downsample rate ds is in attention_ds]); between levels a down ResBlock (resblock_updown) or a
  Downsample (`op`: strided 3x3 conv if conv_resample else 2x2 average pool). middle_block =
  ResBlock, Attn, ResBlock. output_blocks per level reversed, num_res_blocks + 1 x
  (ResBlock(ch + skip -> mult*C) [+ Attn]), the last of each level > 0 also gets an up ResBlock
  or an Upsample (`conv`: nearest x2 then conv3x3). out = GN, SiLU, conv3x3.

Run `python3 scripts/adm_reference.py` to print a parameter summary of the full-size
configurations (built on the meta device, so no memory is used).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

SIGMA_DATA = 0.5
SIGMA_MIN = 0.002


# ---------------------------------------------------------------------------------------------
# Building blocks


def timestep_embedding(t, dim, max_period=10000.0):
    """[N] real times -> [N, dim] sinusoidal embedding, cosines first, in t's dtype."""
    half = dim // 2
    idx = torch.arange(half, dtype=t.dtype, device=t.device)
    freqs = torch.exp(idx * (-math.log(max_period) / half))
    phase = t.reshape(-1, 1) * freqs.reshape(1, -1)
    out = torch.cat([phase.cos(), phase.sin()], dim=1)
    if dim % 2 == 1:
        out = torch.cat([out, out.new_zeros(out.shape[0], 1)], dim=1)
    return out


def group_norm(channels):
    return nn.GroupNorm(32, channels, eps=1e-5)


class Block(nn.ModuleList):
    """An indexed container (state_dict names `.0`, `.1`, ...) that feeds emb to the layers
    that take it."""

    def forward(self, h, emb):
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            else:
                h = layer(h)
        return h


class ResBlock(nn.Module):
    def __init__(self, cin, emb_dim, cout, scale_shift, up=False, down=False):
        super().__init__()
        assert not (up and down)
        self.cin, self.cout = cin, cout
        self.scale_shift = scale_shift
        self.up, self.down = up, down
        # Registration order fixes the state_dict order (matches the official module).
        self.in_layers = nn.Sequential(
            group_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_dim, 2 * cout if scale_shift else cout)
        )
        self.out_layers = nn.Sequential(
            group_norm(cout), nn.SiLU(), nn.Identity(), nn.Conv2d(cout, cout, 3, padding=1)
        )
        if cin != cout:
            self.skip_connection = nn.Conv2d(cin, cout, 1)
        else:
            self.skip_connection = nn.Identity()

    def _resample(self, t):
        if self.up:
            return F.interpolate(t, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(t, kernel_size=2, stride=2)
        return t

    def forward(self, x, emb):
        norm1, _, conv1 = self.in_layers
        h = F.silu(norm1(x))
        h = self._resample(h)
        x = self._resample(x)
        h = conv1(h)
        e = self.emb_layers[1](F.silu(emb))[:, :, None, None].to(h.dtype)
        norm2, _, _, conv2 = self.out_layers
        if self.scale_shift:
            scale, shift = e[:, : self.cout], e[:, self.cout :]
            h = norm2(h) * (1.0 + scale) + shift
        else:
            h = norm2(h + e)
        h = conv2(F.silu(h))
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    def __init__(self, channels, heads, qkv_order, conv_dims):
        super().__init__()
        assert channels % heads == 0, (channels, heads)
        assert qkv_order in ("flash", "legacy"), qkv_order
        self.channels, self.heads, self.qkv_order = channels, heads, qkv_order
        conv = nn.Conv2d if conv_dims == 2 else nn.Conv1d
        self.norm = group_norm(channels)
        self.qkv = conv(channels, 3 * channels, 1)
        self.proj_out = conv(channels, channels, 1)

    def forward(self, x):
        b, c, hh, ww = x.shape
        n, d = self.heads, c // self.heads
        t = hh * ww
        z = self.norm(x).reshape(b, c, t)
        w_qkv = self.qkv.weight.reshape(3 * c, c)
        qkv = torch.einsum("oc,bct->bot", w_qkv, z) + self.qkv.bias.reshape(1, -1, 1)
        if self.qkv_order == "flash":
            qkv = qkv.reshape(b, 3, n, d, t)
            q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        else:
            qkv = qkv.reshape(b, n, 3, d, t)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        # q, k, v: [b, heads, head_dim, t]
        logits = torch.einsum("bndt,bnds->bnts", q, k) / math.sqrt(d)
        attn = torch.softmax(logits, dim=-1)
        a = torch.einsum("bnts,bnds->bndt", attn, v).reshape(b, c, t)
        w_out = self.proj_out.weight.reshape(c, c)
        a = torch.einsum("oc,bct->bot", w_out, a) + self.proj_out.bias.reshape(1, -1, 1)
        return x + a.reshape(b, c, hh, ww)


class Downsample(nn.Module):
    def __init__(self, channels, use_conv):
        super().__init__()
        if use_conv:
            self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels, use_conv):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


# ---------------------------------------------------------------------------------------------
# The network


class UNet(nn.Module):
    def __init__(
        self,
        image_size,
        in_channels,
        model_channels,
        out_channels,
        num_res_blocks,
        attention_ds,
        channel_mult,
        num_classes=None,
        num_heads=1,
        num_head_channels=-1,
        use_scale_shift_norm=False,
        resblock_updown=False,
        conv_resample=True,
        qkv_order="flash",
        attention_conv_dims=None,
    ):
        super().__init__()
        if attention_conv_dims is None:
            attention_conv_dims = 2 if qkv_order == "flash" else 1
        self.image_size = image_size
        self.model_channels = model_channels
        self.num_classes = num_classes
        attention_ds = set(attention_ds)
        mc = model_channels
        emb_dim = 4 * mc

        def heads_for(ch):
            return num_heads if num_head_channels == -1 else ch // num_head_channels

        def attn(ch):
            return AttentionBlock(ch, heads_for(ch), qkv_order, attention_conv_dims)

        def res(cin, cout, **kw):
            return ResBlock(cin, emb_dim, cout, use_scale_shift_norm, **kw)

        self.time_embed = nn.Sequential(
            nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        ch = int(channel_mult[0] * mc)
        first_ch = ch
        self.input_blocks = nn.ModuleList(
            [Block([nn.Conv2d(in_channels, ch, 3, padding=1)])]
        )
        skips = [ch]
        ds = 1
        last = len(channel_mult) - 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, int(mult * mc))]
                ch = int(mult * mc)
                if ds in attention_ds:
                    layers.append(attn(ch))
                self.input_blocks.append(Block(layers))
                skips.append(ch)
            if level != last:
                if resblock_updown:
                    down = res(ch, ch, down=True)
                else:
                    down = Downsample(ch, conv_resample)
                self.input_blocks.append(Block([down]))
                skips.append(ch)
                ds *= 2

        self.middle_block = Block([res(ch, ch), attn(ch), res(ch, ch)])

        self.output_blocks = nn.ModuleList()
        for level in range(last, -1, -1):
            mult = channel_mult[level]
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skips.pop(), int(mult * mc))]
                ch = int(mult * mc)
                if ds in attention_ds:
                    layers.append(attn(ch))
                if level > 0 and i == num_res_blocks:
                    if resblock_updown:
                        layers.append(res(ch, ch, up=True))
                    else:
                        layers.append(Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(Block(layers))
        assert not skips

        self.out = nn.Sequential(
            group_norm(ch), nn.SiLU(), nn.Conv2d(first_ch, out_channels, 3, padding=1)
        )

    def forward(self, x, timesteps, y=None):
        if (y is None) != (self.num_classes is None):
            raise ValueError("labels must be given exactly when the model is class-conditional")
        dtype = self.time_embed[0].weight.dtype
        t = torch.as_tensor(timesteps, device=x.device).to(dtype).reshape(-1)
        if t.numel() == 1 and x.shape[0] > 1:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        h = x.to(dtype)
        stack = []
        for blk in self.input_blocks:
            h = blk(h, emb)
            stack.append(h)
        h = self.middle_block(h, emb)
        for blk in self.output_blocks:
            h = blk(torch.cat([h, stack.pop()], dim=1), emb)
        return self.out(h)


# ---------------------------------------------------------------------------------------------
# Preconditioning (denoisers D(x, sigma) built on the raw network)


def consistency_scalings(sigma, sigma_data=SIGMA_DATA, sigma_min=SIGMA_MIN):
    """(c_skip, c_out, c_in) of the consistency-model boundary-condition parameterisation."""
    c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
    c_out = (sigma - sigma_min) * sigma_data / math.sqrt(sigma**2 + sigma_data**2)
    c_in = 1.0 / math.sqrt(sigma**2 + sigma_data**2)
    return c_skip, c_out, c_in


def edm_scalings(sigma, sigma_data=SIGMA_DATA):
    """(c_skip, c_out, c_in) of the EDM (Karras et al.) parameterisation."""
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / math.sqrt(sigma**2 + sigma_data**2)
    c_in = 1.0 / math.sqrt(sigma**2 + sigma_data**2)
    return c_skip, c_out, c_in


def karras_time(sigma):
    """The network time input used by the consistency and EDM checkpoints: 250 ln(sigma)."""
    return 250.0 * math.log(sigma)


def vp_sigma_table(steps=1000, beta_start=1e-4, beta_end=0.02):
    """sigma_i = sqrt((1 - abar_i) / abar_i) of the linear-beta VP schedule, float64, increasing.

    beta_i = beta_start + i * (beta_end - beta_start) / (steps - 1) (the last one exactly
    beta_end), abar_i = prod_{j <= i} (1 - beta_j) multiplied left to right: bit-identical to
    guided-diffusion's numpy.linspace / numpy.cumprod schedule."""
    step = (beta_end - beta_start) / (steps - 1)
    betas = [beta_start + i * step for i in range(steps - 1)] + [beta_end]
    sigmas, acc = [], 1.0
    for b in betas:
        acc *= 1.0 - b
        sigmas.append(math.sqrt((1.0 - acc) / acc))
    return torch.tensor(sigmas, dtype=torch.float64)


def vp_time(sigma, table=None):
    """Fractional step t(sigma), linear in ln(sigma) between table entries, clamped to [0, 999]."""
    if table is None:
        table = vp_sigma_table()
    s = [float(v) for v in table]
    if sigma <= s[0]:
        return 0.0
    if sigma >= s[-1]:
        return float(len(s) - 1)
    # largest i with s[i] <= sigma (sigma < s[-1] so i + 1 exists)
    lo, hi = 0, len(s) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if s[mid] <= sigma:
            lo = mid
        else:
            hi = mid
    i = lo
    frac = (math.log(sigma) - math.log(s[i])) / (math.log(s[i + 1]) - math.log(s[i]))
    return i + frac


def precondition_coefficients(kind, sigma):
    """(c_skip, c_out, c_in, time input) for a denoiser D = c_skip x + c_out F(c_in x, t)[:3].

    For 'vp_epsilon' this is D = x - sigma * eps(x / sqrt(1 + sigma^2), t(sigma)), i.e.
    c_skip = 1, c_out = -sigma, c_in = 1/sqrt(1 + sigma^2)."""
    if kind == "consistency":
        return (*consistency_scalings(sigma), karras_time(sigma))
    if kind == "edm":
        return (*edm_scalings(sigma), karras_time(sigma))
    if kind == "vp_epsilon":
        return 1.0, -sigma, 1.0 / math.sqrt(1.0 + sigma**2), vp_time(sigma)
    raise ValueError(f"unknown preconditioning {kind!r}")


def denoise(net, kind, x, sigma, y=None, image_channels=3):
    """D(x, sigma) with one sigma for the whole batch."""
    c_skip, c_out, c_in, t = precondition_coefficients(kind, sigma)
    times = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    f = net(c_in * x, times, y)[:, :image_channels]
    return c_skip * x + c_out * f


# ---------------------------------------------------------------------------------------------
# Full-size configurations (for key lists and parameter counts)

FULL_CONFIGS = {
    # openai/consistency_models, ImageNet-64 (edm/cd/ct): launch.sh flags
    "cm_imagenet64": dict(
        image_size=64, in_channels=3, model_channels=192, out_channels=3, num_res_blocks=3,
        attention_ds=[2, 4, 8], channel_mult=(1, 2, 3, 4), num_classes=1000, num_heads=4,
        num_head_channels=64, use_scale_shift_norm=True, resblock_updown=True,
        qkv_order="flash",
    ),
    # openai/consistency_models, LSUN-256 (bedroom, cat)
    "cm_lsun256": dict(
        image_size=256, in_channels=3, model_channels=256, out_channels=3, num_res_blocks=2,
        attention_ds=[8, 16, 32], channel_mult=(1, 1, 2, 2, 4, 4), num_classes=None,
        num_heads=4, num_head_channels=64, use_scale_shift_norm=False, resblock_updown=True,
        qkv_order="flash",
    ),
    # openai/guided-diffusion 256x256_diffusion_uncond.pt
    "adm256_uncond": dict(
        image_size=256, in_channels=3, model_channels=256, out_channels=6, num_res_blocks=2,
        attention_ds=[8, 16, 32], channel_mult=(1, 1, 2, 2, 4, 4), num_classes=None,
        num_heads=4, num_head_channels=64, use_scale_shift_norm=True, resblock_updown=True,
        qkv_order="legacy",
    ),
    # DPS / DiffPIR ffhq_10m.pt (guided-diffusion UNetModel)
    "ffhq_10m": dict(
        image_size=256, in_channels=3, model_channels=128, out_channels=6, num_res_blocks=1,
        attention_ds=[16], channel_mult=(1, 1, 2, 2, 4, 4), num_classes=None, num_heads=4,
        num_head_channels=64, use_scale_shift_norm=True, resblock_updown=True,
        qkv_order="legacy",
    ),
}


def meta_model(cfg):
    with torch.device("meta"):
        return UNet(**cfg)


def key_lines(model):
    """`name<TAB>(d0, d1, ...)` lines in state_dict order."""
    return [f"{k}\t{tuple(v.shape)}" for k, v in model.state_dict().items()]


def count(model):
    sd = model.state_dict()
    return sum(v.numel() for v in sd.values()), len(sd)


if __name__ == "__main__":
    for name, cfg in FULL_CONFIGS.items():
        params, tensors = count(meta_model(cfg))
        print(f"{name}: {params:,} params, {tensors} tensors")
