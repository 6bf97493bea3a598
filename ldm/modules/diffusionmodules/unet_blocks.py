"""Building blocks of the diffusion UNet: timestep-conditioned residual blocks and resampling.

Re-exported by `ldm.modules.diffusionmodules.openaimodel` (the original's import path).
Layouts (`in_layers`, `emb_layers`, `out_layers`, `skip_connection`, `op`, `conv`) and
numerics follow the released checkpoints.
"""
from __future__ import annotations

from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from ldm.modules.attention import SpatialTransformer
from ldm.modules.diffusionmodules.util import avg_pool_nd, checkpoint, conv_nd, linear, normalization, zero_module


class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep embedding as a second argument."""

    @abstractmethod
    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Apply the module to `x` given the timestep embeddings `emb`."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """A sequential module that passes the timestep embedding to its `TimestepBlock`s and the
    context to its `SpatialTransformer`s."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context=None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, TimestepBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by 2 (inner two dims for 3-D), then an optional 3x3 conv.

    Args:
        channels: input channels.
        use_conv: apply a conv after upsampling.
        dims: 1, 2 or 3 (signal dimensionality).
        out_channels: output channels (default `channels`).
        padding: padding of the conv.
    """

    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None,
                 padding: int = 1):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.dims = dims
        if use_conv:
            self.conv = conv_nd(dims, self.channels, self.out_channels, 3, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.channels, f"Upsample: expected {self.channels} channels, got {x.shape[1]}"
        if self.dims == 3:
            x = F.interpolate(x, (x.shape[2], x.shape[3] * 2, x.shape[4] * 2), mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        if self.use_conv:
            x = self.conv(x)
        return x


class Downsample(nn.Module):
    """Downsampling by 2 (inner two dims for 3-D): a 3x3 conv with stride 2 and padding 1, or
    average pooling.

    Args:
        channels: input channels.
        use_conv: strided conv (key `op.weight`) instead of average pooling.
        dims: 1, 2 or 3.
        out_channels: output channels (default `channels`; must equal it without a conv).
        padding: padding of the conv.
    """

    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None,
                 padding: int = 1):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.dims = dims
        stride = 2 if dims != 3 else (1, 2, 2)
        if use_conv:
            self.op = conv_nd(dims, self.channels, self.out_channels, 3, stride=stride, padding=padding)
        else:
            if self.channels != self.out_channels:
                raise ValueError("Downsample without a conv cannot change the number of channels")
            self.op = avg_pool_nd(dims, kernel_size=stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.channels, f"Downsample: expected {self.channels} channels, got {x.shape[1]}"
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the timestep embedding.

    `in_layers` (norm, SiLU, conv3x3) -> add the projected embedding, or with
    `use_scale_shift_norm` apply `norm(h) * (1 + scale) + shift` (FiLM) -> `out_layers`
    (norm, SiLU, dropout, zero-initialised conv3x3) -> `+ skip_connection(x)`.

    Args:
        channels: input channels.
        emb_channels: width of the timestep embedding.
        dropout: dropout rate before the last conv.
        out_channels: output channels (default `channels`).
        use_conv: with a channel change, a 3x3 conv skip instead of a 1x1 conv.
        use_scale_shift_norm: FiLM-like conditioning (BigGAN / improved DDPM).
        dims: 1, 2 or 3.
        use_checkpoint: gradient checkpointing of this block.
        up: resample up inside the block (`resblock_updown`).
        down: resample down inside the block (`resblock_updown`).
    """

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_conv: bool = False, use_scale_shift_norm: bool = False, dims: int = 2,
                 use_checkpoint: bool = False, up: bool = False, down: bool = False):
        super().__init__()
        self.channels = channels
        self.emb_channels = emb_channels
        self.dropout = dropout
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.use_checkpoint = use_checkpoint
        self.use_scale_shift_norm = use_scale_shift_norm

        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), conv_nd(dims, channels, self.out_channels, 3, padding=1),
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False, dims), Upsample(channels, False, dims)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False, dims), Downsample(channels, False, dims)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            normalization(self.out_channels), nn.SiLU(), nn.Dropout(p=dropout),
            zero_module(conv_nd(dims, self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        elif use_conv:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return checkpoint(self._forward, (x, emb), self.parameters(), self.use_checkpoint)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            in_rest, in_conv = self.in_layers[:-1], self.in_layers[-1]
            h = in_conv(self.h_upd(in_rest(x)))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)
        emb_out = emb_out.reshape(*emb_out.shape, *((1,) * (h.ndim - emb_out.ndim)))
        if self.use_scale_shift_norm:
            out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = out_rest(out_norm(h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h
