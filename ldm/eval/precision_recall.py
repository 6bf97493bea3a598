"""Improved precision and recall (Kynkäänniemi et al. 2019), as the ADM evaluator defines them.

Each set's manifold is the union of balls around its points whose radius is the distance to
the k-th nearest neighbour within the set (k = 3, the point itself not counted). Precision is
the fraction of samples inside the reference manifold; recall is the fraction of reference
points inside the sample manifold. A point on a ball's boundary counts as inside (`<=`).
Squared distances are computed as |a|^2 - 2 a.b + |b|^2 like ADM's, in float32 by default
(ADM uses float16 where finite, which can flip points within round-off of a boundary);
pass `dtype=torch.float64` for more headroom.
"""
from __future__ import annotations

import numpy as np
import torch


def _as_tensor(x: np.ndarray | torch.Tensor, device: str | torch.device,
               dtype: torch.dtype) -> torch.Tensor:
    tensor = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return tensor.to(device=device, dtype=dtype)


def pairwise_sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [len(a), len(b)], clamped at 0 like the ADM evaluator."""
    sq = (a * a).sum(1, keepdim=True) - 2.0 * a @ b.T + (b * b).sum(1).unsqueeze(0)
    return sq.clamp_min(0.0)


def manifold_radii(features: torch.Tensor, k: int = 3, batch_size: int = 5000) -> torch.Tensor:
    """Squared distance of each point to its k-th nearest neighbour in the same set."""
    if len(features) <= k:
        raise ValueError(f"need more than k={k} points to estimate a manifold, got {len(features)}")
    radii = []
    for rows in features.split(batch_size):
        # the smallest distance of each row is to itself (0), so the k-th neighbour is k+1-th
        radii.append(pairwise_sq_distances(rows, features).kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _fraction_inside(points: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor,
                     batch_size: int) -> float:
    """Fraction of `points` that lie in at least one ball (center, radius)."""
    inside = []
    for rows in points.split(batch_size):
        inside.append((pairwise_sq_distances(rows, centers) <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(inside).double().mean().item()


def precision_recall(reference: np.ndarray | torch.Tensor, samples: np.ndarray | torch.Tensor,
                     k: int = 3, batch_size: int = 5000, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> tuple[float, float]:
    """(precision, recall) of `samples` [N2, D] with respect to `reference` [N1, D]."""
    ref = _as_tensor(reference, device, dtype)
    fake = _as_tensor(samples, device, dtype)
    if ref.dim() != 2 or fake.dim() != 2 or ref.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sets must be [N, D] with equal D, got {tuple(ref.shape)} "
                         f"and {tuple(fake.shape)}")
    ref_radii = manifold_radii(ref, k, batch_size)
    fake_radii = manifold_radii(fake, k, batch_size)
    precision = _fraction_inside(fake, ref, ref_radii, batch_size)
    recall = _fraction_inside(ref, fake, fake_radii, batch_size)
    return precision, recall
