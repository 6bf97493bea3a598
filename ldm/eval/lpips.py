"""LPIPS distance between paired images (Zhang et al. 2018), the inpainting table's metric.

Uses the project's `ldm.modules.losses.lpips.LPIPS` (VGG16 backbone with the published
linear layers, as taming-transformers and the LDM paper use), imported only when needed.
Images go in as uint8 [B, 3, H, W] and are scaled to [-1, 1], the range LPIPS expects.
"""
from __future__ import annotations

import torch
from torch import nn


def build_lpips(**kwargs) -> nn.Module:
    """The project's LPIPS network in eval mode (dropout off); kwargs go to its constructor
    (`vgg_path`, `lin_path`, `download`). Raises ImportError / OSError when unavailable."""
    from ldm.modules.losses.lpips import LPIPS  # lazy: it loads VGG weights

    return LPIPS(**kwargs).eval()


@torch.no_grad()
def lpips_distance(x: torch.Tensor, y: torch.Tensor, model: nn.Module | None = None,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """LPIPS distance of each pair of uint8 images, [B] (lower is more similar)."""
    if x.shape != y.shape:
        raise ValueError(f"image pairs must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    model = (model if model is not None else build_lpips()).to(device)

    def scale(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=torch.float32) / 127.5 - 1.0

    return model(scale(x), scale(y)).reshape(len(x))
