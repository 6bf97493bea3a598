"""Fréchet Inception Distance (Heusel et al. 2017): statistics, the distance, and .npz caching.

FID = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)). The trace of the matrix square root is
the sum of the square roots of the eigenvalues of S1 S2 (torch-fidelity takes them from
`np.linalg.eigvals(S1 @ S2)`; pytorch-fid and the ADM evaluator use `scipy.linalg.sqrtm`).
Here they come from the symmetric matrix S1^(1/2) S2 S1^(1/2), which has the same eigenvalues,
with two symmetric eigendecompositions: the same value to round-off, several times faster for
2048-d features. When one side has fewer samples than dimensions and its features are at hand
(the training callback, quick checks), the nonzero eigenvalues come exactly from the small
[N, N] matrix F S2 F^T, where S1 = F^T F. Tiny negative eigenvalues from round-off are treated
as zero, so the FID of a set against itself is 0 instead of NaN.

Statistics files hold `mu` and `sigma` (the keys pytorch-fid and the ADM evaluator use), plus
`num_samples`, `extractor` and optionally the raw `features`/`logits` that KID, IS and
precision/recall need.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class FeatureStats:
    """Mean and covariance of a feature set, and optionally the features themselves."""

    mu: np.ndarray
    sigma: np.ndarray
    num_samples: int
    extractor: str = ""
    features: np.ndarray | None = None
    logits: np.ndarray | None = None

    @classmethod
    def from_features(cls, features: np.ndarray, logits: np.ndarray | None = None,
                      extractor: str = "", keep_features: bool = True) -> "FeatureStats":
        """Mean and (unbiased, N-1) covariance of `features` [N, D], as np.cov computes it."""
        features = np.asarray(features)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"need at least 2 feature vectors [N, D], got shape {features.shape}")
        feats64 = features.astype(np.float64)
        return cls(mu=feats64.mean(axis=0), sigma=np.cov(feats64, rowvar=False),
                   num_samples=len(features), extractor=extractor,
                   features=features if keep_features else None,
                   logits=None if logits is None or not keep_features else np.asarray(logits))

    def save(self, path: str | os.PathLike) -> Path:
        """Write an .npz (written to a temporary name first, so a crash leaves no torn file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"mu": self.mu, "sigma": self.sigma, "num_samples": np.int64(self.num_samples),
                  "extractor": np.array(self.extractor)}
        if self.features is not None:
            arrays["features"] = self.features
        if self.logits is not None:
            arrays["logits"] = self.logits
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStats":
        """Read our files and those of pytorch-fid / the ADM evaluator (`mu`, `sigma`)."""
        with np.load(path, allow_pickle=False) as data:
            if "mu" not in data or "sigma" not in data:
                raise ValueError(f"{path} holds no FID statistics (keys: {', '.join(data.files)})")
            features = data["features"] if "features" in data else None
            return cls(mu=data["mu"], sigma=data["sigma"],
                       num_samples=int(data["num_samples"]) if "num_samples" in data else -1,
                       extractor=str(data["extractor"]) if "extractor" in data else "",
                       features=features,
                       logits=data["logits"] if "logits" in data else None)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, factor1: np.ndarray | None = None) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Dowson & Landau 1982).

    `factor1` [N, D], optional, with sigma1 = factor1.T @ factor1, speeds up the case N < D.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    if sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"sigma must be [D, D] for mu [D], got {sigma1.shape} for {mu1.shape}")
    diff = mu1 - mu2
    tr_covmean = trace_sqrt_product(sigma1, sigma2, factor1)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray,
                       factor1: np.ndarray | None = None) -> float:
    """Tr((S1 S2)^(1/2)) for symmetric PSD S1, S2 (S1 = factor1.T @ factor1 when given)."""
    if factor1 is not None:  # nonzero eigenvalues of F^T F S2 are those of F S2 F^T
        inner = factor1 @ sigma2 @ factor1.T
    else:  # eigenvalues of S1 S2 are those of S1^(1/2) S2 S1^(1/2)
        w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2.0)
        root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
        inner = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def covariance_factor(features: np.ndarray) -> np.ndarray:
    """F [N, D] with F.T @ F = np.cov(features, rowvar=False)."""
    x = np.asarray(features, dtype=np.float64)
    return (x - x.mean(axis=0)) / np.sqrt(len(x) - 1)


def fid_from_stats(stats1: FeatureStats, stats2: FeatureStats) -> float:
    """FID between two FeatureStats; refuses stats of different feature extractors."""
    if stats1.extractor and stats2.extractor and stats1.extractor != stats2.extractor:
        raise ValueError(f"statistics come from different feature extractors: "
                         f"'{stats1.extractor}' vs '{stats2.extractor}'")
    for a, b in ((stats1, stats2), (stats2, stats1)):  # FID is symmetric: factor either side
        if a.features is not None and len(a.features) <= a.features.shape[1]:
            return frechet_distance(a.mu, a.sigma, b.mu, b.sigma, covariance_factor(a.features))
    return frechet_distance(stats1.mu, stats1.sigma, stats2.mu, stats2.sigma)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets [N1, D] and [N2, D]."""
    return fid_from_stats(FeatureStats.from_features(features1),
                          FeatureStats.from_features(features2))


def load_or_compute_stats(cache_path: str | os.PathLike | None,
                          compute: Callable[[], FeatureStats],
                          need_features: bool = False) -> FeatureStats:
    """Return the statistics cached at `cache_path`, or compute them once and cache them.

    A cached file without raw features is recomputed when `need_features` (KID, IS, PR) is set.
    """
    if cache_path is not None and Path(cache_path).is_file():
        try:
            stats = FeatureStats.load(cache_path)
        except (OSError, ValueError) as err:
            logger.warning("ignoring unreadable statistics cache %s (%s)", cache_path, err)
        else:
            if stats.features is not None or not need_features:
                logger.info("loaded cached statistics %s (%d samples)", cache_path, stats.num_samples)
                return stats
    stats = compute()
    if cache_path is not None:
        stats.save(cache_path)
        logger.info("cached statistics in %s", cache_path)
    return stats
