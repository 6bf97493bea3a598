"""Helpers of the models' `log_images`: grids, diffusion and denoising rows, condition images.

Everything returns tensors in the models' value range ([-1, 1] for images); the image-logging
callback turns them into PNG files. Grids use `ldm.image_grid.make_grid` (torchvision's layout,
without torchvision).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from einops import rearrange
from torch import Tensor

from ldm.image_grid import make_grid
from ldm.util import isimage, ismap, log_txt_as_img

__all__ = [
    "conditioning_images",
    "denoise_row",
    "diffusion_row",
    "is_map",
    "logged_timesteps",
    "make_grid",
    "rows_to_grid",
    "to_rgb",
]


def rows_to_grid(steps: Sequence[Tensor] | Tensor) -> Tensor:
    """Steps [n, b, C, H, W] (a list over n) -> one grid with a row of n steps per sample."""
    stacked = torch.stack(list(steps)) if not isinstance(steps, Tensor) else steps
    n_per_row = stacked.shape[0]
    grid = rearrange(stacked, "n b c h w -> (b n) c h w")
    return make_grid(grid, nrow=n_per_row)


def logged_timesteps(num_timesteps: int, log_every_t: int) -> list[int]:
    """The timesteps shown in a diffusion row: every `log_every_t`-th and the last one."""
    return [t for t in range(num_timesteps) if t % log_every_t == 0 or t == num_timesteps - 1]


@torch.no_grad()
def diffusion_row(x_start: Tensor, q_sample: Callable[..., Tensor], num_timesteps: int, log_every_t: int,
                  decode: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """A grid showing `x_start` noised to increasing timesteps (q_sample), one row per sample."""
    row = []
    for t in logged_timesteps(num_timesteps, log_every_t):
        ts = torch.full((x_start.shape[0],), t, device=x_start.device, dtype=torch.long)
        noisy = q_sample(x_start=x_start, t=ts, noise=torch.randn_like(x_start))
        row.append(decode(noisy) if decode is not None else noisy)
    return rows_to_grid(row)


@torch.no_grad()
def denoise_row(latents: Sequence[Tensor], decode: Callable[[Tensor], Tensor]) -> Tensor:
    """A grid of decoded intermediate latents of a sampling run, one row per sample."""
    return rows_to_grid([decode(z) for z in latents])


def to_rgb(x: Tensor, colorize: Tensor) -> Tensor:
    """A many-channel map (segmentation, features) projected to RGB by the fixed random 1x1
    `colorize` weights [3, C, 1, 1] and rescaled to [-1, 1]."""
    x = torch.nn.functional.conv2d(x.float(), weight=colorize.to(x.device))
    return 2.0 * (x - x.min()) / (x.max() - x.min()).clamp(min=1e-12) - 1.0


def conditioning_images(batch: dict[str, Any], cond_key: str, xc: Any, size: tuple[int, int],
                        decoded: Tensor | None = None) -> Tensor | None:
    """An image showing a batch's conditions: the decoded condition when the encoder can decode,
    the caption or class name rendered as text, or the condition image itself."""
    if decoded is not None:
        return decoded
    if cond_key in ("caption", "txt") and cond_key in batch:
        return log_txt_as_img(size, list(batch[cond_key]))
    if cond_key == "class_label":
        labels = batch.get("human_label", batch.get("class_label"))
        if labels is not None:
            texts = [str(v.item()) if isinstance(v, Tensor) else str(v) for v in labels]
            return log_txt_as_img(size, texts)
    if isimage(xc):
        return xc
    return None


def is_map(x: Any) -> bool:
    """True for a many-channel spatial map (shown through `to_rgb`)."""
    return ismap(x)
