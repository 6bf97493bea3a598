"""PSNR and SSIM between paired images (super-resolution and reconstruction tables).

PSNR = 10 log10(MAX^2 / MSE) per image pair, MSE over all pixels and channels.
SSIM follows Wang et al. 2004 ("Image quality assessment: from error visibility to structural
similarity"): an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, population
(co)variances, computed per channel and averaged over the "valid" window positions. This is
what `skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)` returns (skimage filters with reflection and then crops the
border, which leaves exactly the valid positions).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _as_float_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.shape != y.shape:
        raise ValueError(f"image pairs must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() == 3:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"expected [B, C, H, W] or [C, H, W] images, got {tuple(x.shape)}")
    return x.to(torch.float64), y.to(torch.float64)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each pair, [B] (inf for identical images)."""
    x, y = _as_float_pair(x, y)
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range ** 2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 2-D Gaussian window [size, size] (float64)."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords ** 2) / (2.0 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0, window_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean structural similarity of each pair, [B], averaged over channels and positions."""
    x, y = _as_float_pair(x, y)
    channels = x.shape[1]
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"images of size {tuple(x.shape[-2:])} are smaller than the "
                         f"{window_size}x{window_size} SSIM window")
    window = gaussian_window(window_size, sigma).to(x.device)
    window = window.expand(channels, 1, window_size, window_size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov_xy = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1)


def psnr_from_mse(mse: float, data_range: float = 255.0) -> float:
    """PSNR in dB for a given mean squared error."""
    return math.inf if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)
