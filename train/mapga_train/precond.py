"""EDM and consistency-model preconditioning around the raw U-Net, the Karras grid and the Heun
step: the PyTorch twins of `src/models/network.rs` and ALGORITHMS.md sections 3 and 4.

mapga's convention for both kinds: c_noise = ln(sigma) / 4 (EDM's), also for the consistency
model (openai's checkpoints use 250 ln t; the model card would say so).
"""

from __future__ import annotations

import torch

from .unet import UNet

SIGMA_DATA = 0.5
SIGMA_MIN = 0.002
SIGMA_MAX = 80.0


def _per_sample(sigma, x: torch.Tensor) -> torch.Tensor:
    """`sigma` (a number or a [B] tensor) as a float64 [B] tensor."""
    s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    return s.expand(x.shape[0]) if s.dim() == 0 else s.to(torch.float64)


def _apply(net: UNet, x, sigma, c_skip, c_out, c_in) -> torch.Tensor:
    view = (-1, 1, 1, 1)
    f = net(x * c_in.to(x.dtype).view(view), sigma.log() / 4.0)
    return c_skip.to(x.dtype).view(view) * x + c_out.to(x.dtype).view(view) * f


def denoise(net: UNet, x: torch.Tensor, sigma, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """EDM's D(x, sigma) = c_skip x + c_out F(c_in x, ln(sigma) / 4)."""
    s = _per_sample(sigma, x)
    sd = sigma_data
    c_skip = sd**2 / (s**2 + sd**2)
    c_out = s * sd / (s**2 + sd**2).sqrt()
    c_in = 1.0 / (s**2 + sd**2).sqrt()
    return _apply(net, x, s, c_skip, c_out, c_in)


def consistency(
    net: UNet, x: torch.Tensor, t, sigma_data: float = SIGMA_DATA, sigma_min: float = SIGMA_MIN
) -> torch.Tensor:
    """f(x, t) = c_skip(t) x + c_out(t) F(c_in x, ln(t) / 4), with f(x, sigma_min) = x."""
    s = _per_sample(t, x)
    sd = sigma_data
    c_skip = sd**2 / ((s - sigma_min) ** 2 + sd**2)
    c_out = sd * (s - sigma_min) / (sd**2 + s**2).sqrt()
    c_in = 1.0 / (s**2 + sd**2).sqrt()
    return _apply(net, x, s, c_skip, c_out, c_in)


def karras(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = 7.0):
    """The n Karras levels from sigma_max down to sigma_min (float64 tensor)."""
    i = torch.arange(n, dtype=torch.float64)
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (a + i / (n - 1) * (b - a)) ** rho


@torch.no_grad()
def heun_step(teacher: UNet, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor):
    """One Heun step of the PF-ODE dx/dt = (x - D(x, t)) / t from t to t_next (> 0), per sample."""
    view = (-1, 1, 1, 1)
    tv, nv = t.to(x.dtype).view(view), t_next.to(x.dtype).view(view)
    d = (x - denoise(teacher, x, t)) / tv
    x2 = x + (nv - tv) * d
    d2 = (x2 - denoise(teacher, x2, t_next)) / nv
    return x + (nv - tv) * (d + d2) / 2


@torch.no_grad()
def edm_sample(net: UNet, noise: torch.Tensor, steps: int = 18) -> torch.Tensor:
    """EDM's deterministic Heun sampler (Algorithm 1) from `noise` ~ N(0, I)."""
    sig = torch.cat([karras(steps), torch.zeros(1, dtype=torch.float64)])
    x = noise * sig[0].item()
    for i in range(steps):
        t, tn = sig[i].item(), sig[i + 1].item()
        d = (x - denoise(net, x, t)) / t
        x2 = x + (tn - t) * d
        if tn > 0:
            d2 = (x2 - denoise(net, x2, tn)) / tn
            x2 = x + (tn - t) * (d + d2) / 2
        x = x2
    return x
