"""PSNR and SSIM: closed-form cases and the skimage (Wang et al. 2004) definition."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from ldm.eval.psnr_ssim import gaussian_window, psnr, ssim


def test_psnr_of_a_constant_offset():
    x = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    y = torch.full_like(x, 10)  # MSE = 100
    torch.testing.assert_close(psnr(x, y), torch.full((2,), 10 * math.log10(255 ** 2 / 100),
                                                      dtype=torch.float64))
    # float images in [0, 1]: an error of 0.1 everywhere is 20 dB
    assert psnr(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.1), data_range=1.0).item() \
        == pytest.approx(20.0)
    assert math.isinf(psnr(x, x)[0].item())


def test_ssim_of_identical_images_is_one():
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64))


def test_ssim_of_constant_images_matches_the_luminance_term():
    # sigma_x = sigma_y = sigma_xy = 0: SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = 100.0, 150.0
    c1 = (0.01 * 255) ** 2
    x = torch.full((1, 3, 20, 20), a)
    y = torch.full((1, 3, 20, 20), b)
    assert ssim(x, y).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-10)


def _ssim_skimage_way(x: np.ndarray, y: np.ndarray, data_range: float = 255.0) -> float:
    """skimage's gaussian_weights=True, sigma=1.5, use_sample_covariance=False, per channel."""
    values = []
    for c in range(x.shape[0]):
        a, b = x[c].astype(np.float64), y[c].astype(np.float64)
        f = lambda t: gaussian_filter(t, sigma=1.5, truncate=3.5, mode="reflect")  # noqa: E731
        ux, uy = f(a), f(b)
        vx, vy, vxy = f(a * a) - ux * ux, f(b * b) - uy * uy, f(a * b) - ux * uy
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
        values.append(s[5:-5, 5:-5].mean())  # skimage crops (win_size - 1) // 2 = 5
    return float(np.mean(values))


def test_ssim_matches_the_skimage_definition_on_random_images():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 40, 33)).astype(np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-40, 40, x.shape), 0, 255).astype(np.uint8)
    ours = ssim(torch.from_numpy(x), torch.from_numpy(y)).item()
    assert ours == pytest.approx(_ssim_skimage_way(x, y), abs=1e-9)


def test_gaussian_window_is_normalised_and_symmetric():
    w = gaussian_window(11, 1.5)
    assert w.sum().item() == pytest.approx(1.0) and torch.equal(w, w.T) and torch.equal(w, w.flip(0))


def test_mismatched_or_tiny_images_raise():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
