"""Bilinear resizing with TensorFlow 1.x rules, as torch-fidelity feeds images to the FID Inception.

TF1's `tf.image.resize_bilinear(align_corners=False)` maps output pixel `i` to the source
coordinate `i * in_size / out_size` (no half-pixel offset, unlike `F.interpolate`), takes the
floor as the lower neighbour, clamps the upper neighbour to the last row/column and lerps.
torch-fidelity (`interpolate_bilinear_2d_like_tensorflow1x`, method "slow") computes the grid in
float32 the same way; this file follows that arithmetic step by step so that features match.
Consequences worth knowing: a 2x downscale picks every other pixel (no averaging), and the
last output rows of an upscale repeat the border pixel.
"""
from __future__ import annotations

import torch


def _source_grid(in_size: int, out_size: int, align_corners: bool, device: torch.device,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower index, upper index and lerp weight of each output position (TF1 rules)."""
    if align_corners:
        scale = (in_size - 1) / max(1, out_size - 1)
    else:
        scale = in_size / out_size
    coords = torch.arange(0, out_size, 1, dtype=dtype, device=device)
    coords = coords * torch.tensor(scale, dtype=torch.float32, device=device)
    lower = coords.long()  # coords >= 0, so truncation is the floor
    upper = (lower + 1).clamp_max(in_size - 1)
    frac = coords - lower.to(coords.dtype)
    return lower, upper, frac


def resize_bilinear_tf1(images: torch.Tensor, size: tuple[int, int],
                        align_corners: bool = False) -> torch.Tensor:
    """Resize [B, C, H, W] float images to `size` = (H', W') like TF 1.x `resize_bilinear`."""
    if images.dim() != 4:
        raise ValueError(f"expected a [B, C, H, W] tensor, got shape {tuple(images.shape)}")
    if not torch.is_floating_point(images):
        raise ValueError(f"expected a floating point tensor, got {images.dtype}")
    out_h, out_w = int(size[0]), int(size[1])
    in_h, in_w = images.shape[-2:]
    y_lo, y_hi, dy = _source_grid(in_h, out_h, align_corners, images.device, images.dtype)
    x_lo, x_hi, dx = _source_grid(in_w, out_w, align_corners, images.device, images.dtype)
    rows_lo = images[:, :, y_lo, :]
    rows_hi = images[:, :, y_hi, :]
    in_00, in_01 = rows_lo[..., x_lo], rows_lo[..., x_hi]
    in_10, in_11 = rows_hi[..., x_lo], rows_hi[..., x_hi]
    dx = dx.view(1, 1, 1, out_w)
    top = in_00 + (in_01 - in_00) * dx
    bottom = in_10 + (in_11 - in_10) * dx
    return top + (bottom - top) * dy.view(1, 1, out_h, 1)
