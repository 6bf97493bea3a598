"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs").

KID is the unbiased estimate of the squared MMD with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets. Defaults follow torch-fidelity:
100 subsets of 1000 samples drawn without replacement by `np.random.RandomState(2020)`
(first from the samples, then from the reference, per subset).
"""
from __future__ import annotations

import numpy as np


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3,
                      gamma: float | None = None, coef0: float = 1.0) -> np.ndarray:
    """k(x, y) = (gamma x.y + coef0)^degree with gamma = 1 / D by default."""
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    return (x @ y.T * gamma + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size samples (Gretton et al. 2012, Lemma 6)."""
    m = k_xx.shape[0]
    if k_xx.shape != (m, m) or k_yy.shape != (m, m) or k_xy.shape != (m, m):
        raise ValueError("kernel matrices must all be [m, m]")
    if m < 2:
        raise ValueError("the unbiased MMD needs at least 2 samples per set")
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray,
                              subsets: int = 100, subset_size: int = 1000, degree: int = 3,
                              gamma: float | None = None, coef0: float = 1.0,
                              seed: int = 2020) -> tuple[float, float]:
    """Mean and standard deviation of the subset MMD^2 estimates between two feature sets."""
    f1 = np.asarray(features1, dtype=np.float64)
    f2 = np.asarray(features2, dtype=np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sets must be [N, D] with equal D, got {f1.shape} and {f2.shape}")
    if len(f1) < subset_size or len(f2) < subset_size:
        raise ValueError(f"KID subset size {subset_size} is larger than a feature set "
                         f"({len(f1)} and {len(f2)} samples): lower the subset size")
    rng = np.random.RandomState(seed)
    estimates = np.zeros(subsets)
    for i in range(subsets):
        x = f1[rng.choice(len(f1), subset_size, replace=False)]
        y = f2[rng.choice(len(f2), subset_size, replace=False)]
        kernel = lambda a, b: polynomial_kernel(a, b, degree, gamma, coef0)  # noqa: E731
        estimates[i] = mmd2_unbiased(kernel(x, x), kernel(x, y), kernel(y, y))
    return float(estimates.mean()), float(estimates.std())
