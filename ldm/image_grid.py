"""Image grids and PNG writing without torchvision.

`make_grid` lays a batch [B, C, H, W] out as rows of `nrow` images separated by `padding`
pixels (torchvision's layout), `save_image` writes a [C, H, W] or [B, C, H, W] tensor in [0, 1]
as a PNG, and `to_uint8` converts model outputs in [-1, 1] to HWC uint8 arrays.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> torch.Tensor:
    """Arrange [B, C, H, W] images into one [C, H', W'] grid with `nrow` images per row."""
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ValueError(f"make_grid expects [B, C, H, W] images, got shape {tuple(images.shape)}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    b, c, h, w = images.shape
    ncol = min(max(nrow, 1), b)
    nrows = math.ceil(b / ncol)
    height, width = h + padding, w + padding
    grid = images.new_full((c, nrows * height + padding, ncol * width + padding), pad_value)
    for k in range(b):
        row, col = divmod(k, ncol)
        top, left = row * height + padding, col * width + padding
        grid[:, top:top + h, left:left + w] = images[k]
    return grid


def to_uint8(images: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Map images in `value_range` to uint8, channels last ([.., C, H, W] -> [.., H, W, C])."""
    lo, hi = value_range
    x = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    x = (x * 255.0).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def save_image(image: torch.Tensor, path: str | os.PathLike, nrow: int = 8,
               value_range: tuple[float, float] = (0.0, 1.0)) -> Path:
    """Write one image [C, H, W] (or a batch, as a grid) in `value_range` to a PNG file."""
    if image.ndim == 4:
        image = make_grid(image, nrow=nrow)
    array = to_uint8(image, value_range)
    if array.shape[-1] == 1:
        array = array[..., 0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
