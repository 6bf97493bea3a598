"""Patch-wise application of a network to an image too large for memory (`split_input_params`).

The original `LatentDiffusion` could encode, decode and denoise in overlapping crops that are
blended with weights falling off towards each crop's border (needed for x4 super-resolution of
real photos). It carried three copies of that code; here it is one function, `patchwise`.

`split_input_params` keys (as the original): `ks` and `stride` (crop size and step, in the units
of the tensor being cut: pixels for encoding, latent cells for decoding and denoising), `vqf`
(the first stage's down-sampling factor), `patch_distributed_vq` (turn patch-wise coding on),
`clip_min_weight` / `clip_max_weight` (clamp of the border weighting), `tie_braker` with
`clip_min_tie_weight` / `clip_max_tie_weight` (extra weighting across crops).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

DEFAULT_SPLIT_INPUT_PARAMS: dict[str, Any] = {
    "ks": (128, 128),
    "stride": (64, 64),
    "vqf": 4,
    "patch_distributed_vq": True,
    "tie_braker": False,
    "clip_max_weight": 0.5,
    "clip_min_weight": 0.01,
    "clip_max_tie_weight": 0.5,
    "clip_min_tie_weight": 0.01,
}


def delta_border(h: int, w: int) -> Tensor:
    """Normalised distance of every pixel of an h x w crop to the crop's border: [h, w],
    0 at the border, 0.5 at the centre."""
    y = torch.arange(h).view(h, 1, 1).repeat(1, w, 1)
    x = torch.arange(w).view(1, w, 1).repeat(h, 1, 1)
    arr = torch.cat([y, x], dim=-1) / torch.tensor([h - 1, w - 1]).clamp(min=1).view(1, 1, 2)
    dist_left_up = torch.min(arr, dim=-1, keepdim=True)[0]
    dist_right_down = torch.min(1 - arr, dim=-1, keepdim=True)[0]
    return torch.min(torch.cat([dist_left_up, dist_right_down], dim=-1), dim=-1)[0]


def crop_weighting(h: int, w: int, ly: int, lx: int, params: Mapping[str, Any]) -> Tensor:
    """Blending weights [1, h*w, ly*lx] of ly x lx crops of size h x w."""
    weighting = torch.clip(delta_border(h, w), params["clip_min_weight"], params["clip_max_weight"])
    weighting = weighting.view(1, h * w, 1).repeat(1, 1, ly * lx)
    if params.get("tie_braker", False):
        tie = torch.clip(delta_border(ly, lx), params["clip_min_tie_weight"], params["clip_max_tie_weight"])
        weighting = weighting * tie.view(1, 1, ly * lx)
    return weighting


def _fit(ks: Sequence[int], stride: Sequence[int], h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Shrink the crop size and stride to the tensor when it is smaller (as the original)."""
    ks = (min(int(ks[0]), h), min(int(ks[1]), w))
    stride = (min(int(stride[0]), h), min(int(stride[1]), w))
    return ks, stride


def patchwise(
    fn: Callable[[Tensor, int], Tensor],
    x: Tensor,
    params: Mapping[str, Any],
    ks: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    scale: float = 1.0,
) -> Tensor:
    """Apply `fn(crop, index)` to overlapping crops of `x` [B, C, H, W] and blend the results.

    `fn` maps a [B, C, kh, kw] crop to a [B, C', kh*scale, kw*scale] tensor (`scale` > 1 for a
    decoder, < 1 for an encoder, 1 for the denoiser); the result is [B, C', H*scale, W*scale],
    each output pixel a weighted mean of the crops covering it.
    """
    params = {**DEFAULT_SPLIT_INPUT_PARAMS, **dict(params)}
    b, _, h, w = x.shape
    ks, stride = _fit(ks or params["ks"], stride or params["stride"], h, w)
    ly = (h - ks[0]) // stride[0] + 1
    lx = (w - ks[1]) // stride[1] + 1
    unfold = torch.nn.Unfold(kernel_size=ks, dilation=1, padding=0, stride=stride)
    crops = unfold(x).view(b, x.shape[1], ks[0], ks[1], ly * lx)

    out_ks = (round(ks[0] * scale), round(ks[1] * scale))
    out_stride = (round(stride[0] * scale), round(stride[1] * scale))
    out_size = (round(h * scale), round(w * scale))
    fold = torch.nn.Fold(output_size=out_size, kernel_size=out_ks, dilation=1, padding=0, stride=out_stride)
    weighting = crop_weighting(out_ks[0], out_ks[1], ly, lx, params).to(device=x.device, dtype=x.dtype)
    normalization = fold(weighting).view(1, 1, *out_size)
    weighting = weighting.view(1, 1, out_ks[0], out_ks[1], ly * lx)

    outputs = torch.stack([fn(crops[..., i], i) for i in range(ly * lx)], dim=-1)
    if outputs.shape[2:4] != out_ks:
        raise ValueError(f"patchwise: a {tuple(ks)} crop became {tuple(outputs.shape[2:4])}, expected "
                         f"{out_ks} (check split_input_params['vqf'])")
    outputs = outputs * weighting.to(outputs.dtype)
    outputs = outputs.view(b, -1, ly * lx)
    return fold(outputs) / normalization.to(outputs.dtype)


def crops_of(c: Tensor, params: Mapping[str, Any], ks: Sequence[int] | None = None,
             stride: Sequence[int] | None = None) -> list[Tensor]:
    """The crops `patchwise` cuts from a tensor of the same spatial size as `c`, in order."""
    params = {**DEFAULT_SPLIT_INPUT_PARAMS, **dict(params)}
    b, ch, h, w = c.shape
    ks, stride = _fit(ks or params["ks"], stride or params["stride"], h, w)
    unfold = torch.nn.Unfold(kernel_size=ks, dilation=1, padding=0, stride=stride)
    crops = unfold(c)
    crops = crops.view(b, ch, ks[0], ks[1], crops.shape[-1])
    return [crops[..., i] for i in range(crops.shape[-1])]
