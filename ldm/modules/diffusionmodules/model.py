"""Encoder and decoder networks of the first-stage autoencoders (LDM paper, Sec. 3.1).

Both are ResNet stacks with GroupNorm(32, eps=1e-6) and swish, a mid block of
ResnetBlock / attention / ResnetBlock, and `len(ch_mult) - 1` resolution changes by a factor
of 2 each, so the spatial downsampling factor is `f = 2 ** (len(ch_mult) - 1)`.
Module names (`down.{i}.block.{j}`, `mid.attn_1`, `up.{i}.upsample`, ...) follow the released
checkpoints exactly; `up.0` is the highest resolution although it is built last.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

ATTENTION_TYPES = ("vanilla", "linear", "none")


def nonlinearity(x: Tensor) -> Tensor:
    """Swish, `x * sigmoid(x)` (the original's name)."""
    return F.silu(x)


def Normalize(in_channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with 32 groups and eps 1e-6, as in every autoencoder block."""
    return nn.GroupNorm(num_groups=num_groups, num_channels=in_channels, eps=1e-6, affine=True)


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling, then a 3x3 conv when `with_conv`."""

    def __init__(self, in_channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


class Downsample(nn.Module):
    """x2 downsampling: zero-pad right and bottom by one pixel (`(0, 1, 0, 1)`), then a 3x3
    stride-2 conv without padding; average pooling when `with_conv` is False."""

    def __init__(self, in_channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResnetBlock(nn.Module):
    """norm1 -> swish -> conv1 (-> + temb) -> norm2 -> swish -> dropout -> conv2, plus a skip.

    Args:
        in_channels: input channels.
        out_channels: output channels (default: `in_channels`).
        conv_shortcut: use a 3x3 `conv_shortcut` instead of the 1x1 `nin_shortcut` when the
            channel count changes.
        dropout: dropout probability before `conv2`.
        temb_channels: width of a timestep embedding added after `conv1`; 0 (the autoencoders)
            builds no `temb_proj`.
    """

    def __init__(self, *, in_channels: int, out_channels: int | None = None,
                 conv_shortcut: bool = False, dropout: float = 0.0, temb_channels: int = 512):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.use_conv_shortcut = conv_shortcut

        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if temb_channels > 0:
            self.temb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = Normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            if conv_shortcut:
                self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
            else:
                self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self.conv1(nonlinearity(self.norm1(x)))
        if temb is not None:
            h = h + self.temb_proj(nonlinearity(temb))[:, :, None, None]
        h = self.conv2(self.dropout(nonlinearity(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.conv_shortcut(x) if self.use_conv_shortcut else self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv `q`, `k`, `v`, `proj_out` and a residual.

    Computes `softmax(q^T k / sqrt(C)) v` with `scaled_dot_product_attention` (flash or
    memory-efficient kernels where the device has them).
    """

    def __init__(self, in_channels: int):
        super().__init__()
        self.in_channels = in_channels
        self.norm = Normalize(in_channels)
        self.q = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
        self.k = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
        self.v = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
        self.proj_out = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        b, c, height, width = h.shape
        # [B, C, H, W] -> [B, 1 head, HW tokens, C]
        q, k, v = (t(h).reshape(b, 1, c, height * width).transpose(2, 3) for t in (self.q, self.k, self.v))
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(2, 3).reshape(b, c, height, width)
        return x + self.proj_out(h)


class LinAttnBlock(nn.Module):
    """Linear attention (`attn_type: linear`), one head of width `in_channels`, no norm and no
    residual, as the original's `LinAttnBlock(LinearAttention)`; keys `to_qkv`, `to_out`."""

    def __init__(self, in_channels: int, heads: int = 1, dim_head: int | None = None):
        super().__init__()
        dim_head = in_channels if dim_head is None else dim_head
        self.heads = heads
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(in_channels, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, in_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, _, height, width = x.shape
        q, k, v = self.to_qkv(x).reshape(b, 3, self.heads, -1, height * width).unbind(dim=1)
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        return self.to_out(out.reshape(b, -1, height, width))


def make_attn(in_channels: int, attn_type: str = "vanilla") -> nn.Module:
    """The attention module for `attn_type` ("vanilla", "linear" or "none" = nn.Identity)."""
    if attn_type not in ATTENTION_TYPES:
        raise ValueError(f"attn_type must be one of {ATTENTION_TYPES}, got {attn_type!r}")
    logger.debug("making attention of type '%s' with %d in_channels", attn_type, in_channels)
    if attn_type == "vanilla":
        return AttnBlock(in_channels)
    if attn_type == "none":
        return nn.Identity()
    return LinAttnBlock(in_channels)


def _check_channels(ch: int, ch_mult: Sequence[int]) -> None:
    for mult in ch_mult:
        if (ch * mult) % 32:
            raise ValueError(f"ch * ch_mult must be multiples of 32 (GroupNorm(32)); got ch={ch}, ch_mult={list(ch_mult)}")


class Encoder(nn.Module):
    """Image [B, in_channels, H, W] -> latent moments [B, (2 if double_z else 1) * z_channels, H/f, W/f].

    Args:
        ch: base channel count; level i has `ch * ch_mult[i]` channels.
        out_ch: output channels of the matching decoder (accepted and ignored here, so one
            `ddconfig` serves both).
        ch_mult: channel multipliers per resolution level; f = 2 ** (len(ch_mult) - 1).
        num_res_blocks: ResnetBlocks per level.
        attn_resolutions: feature-map sizes (relative to `resolution`) that get attention after
            each ResnetBlock; the mid block always has one unless `attn_type` is "none".
        dropout: dropout in the ResnetBlocks.
        resamp_with_conv: strided conv (True) or average pooling for downsampling.
        in_channels: image channels.
        resolution: nominal training image size (only used to place `attn_resolutions`).
        z_channels: latent channels.
        double_z: output mean and log-variance (KL models) instead of a single latent (VQ).
        use_linear_attn: shorthand for `attn_type="linear"`.
        attn_type: "vanilla" (softmax attention), "linear" or "none".
    """

    def __init__(self, *, ch: int, out_ch: int | None = None, ch_mult: Sequence[int] = (1, 2, 4, 8),
                 num_res_blocks: int, attn_resolutions: Sequence[int], dropout: float = 0.0,
                 resamp_with_conv: bool = True, in_channels: int, resolution: int, z_channels: int,
                 double_z: bool = True, use_linear_attn: bool = False, attn_type: str = "vanilla",
                 **ignore_kwargs):
        super().__init__()
        if use_linear_attn:
            attn_type = "linear"
        _check_channels(ch, ch_mult)
        self.ch = ch
        self.temb_ch = 0
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.resolution = resolution
        self.in_channels = in_channels
        self.downsample_factor = 2 ** (self.num_resolutions - 1)

        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, stride=1, padding=1)
        curr_res = resolution
        in_ch_mult = (1,) + tuple(ch_mult)
        self.in_ch_mult = in_ch_mult
        self.down = nn.ModuleList()
        block_in = ch
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in = ch * in_ch_mult[i_level]
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                block.append(ResnetBlock(in_channels=block_in, out_channels=block_out,
                                         temb_channels=self.temb_ch, dropout=dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(make_attn(block_in, attn_type=attn_type))
            down = nn.Module()
            down.block = block
            down.attn = attn
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in, resamp_with_conv)
                curr_res = curr_res // 2
            self.down.append(down)

        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(in_channels=block_in, out_channels=block_in,
                                       temb_channels=self.temb_ch, dropout=dropout)
        self.mid.attn_1 = make_attn(block_in, attn_type=attn_type)
        self.mid.block_2 = ResnetBlock(in_channels=block_in, out_channels=block_in,
                                       temb_channels=self.temb_ch, dropout=dropout)

        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels,
                                  kernel_size=3, stride=1, padding=1)

    def check_input(self, x: Tensor) -> None:
        """Raise ValueError naming the expected shape unless x is [B, in_channels, H, W] with
        H and W divisible by the downsampling factor."""
        f = self.downsample_factor
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"expected images of shape [B, {self.in_channels}, H, W] with H and W divisible by "
                f"{f} (the downsampling factor), got {list(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        h = self.conv_in(x)
        for i_level, down in enumerate(self.down):
            for i_block in range(self.num_res_blocks):
                h = down.block[i_block](h)
                if len(down.attn) > 0:
                    h = down.attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(nonlinearity(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent [B, z_channels, h, w] -> image [B, out_ch, h*f, w*f].

    Args: as `Encoder` (same `ddconfig`), plus
        out_ch: output image channels.
        give_pre_end: return the features before `norm_out` / `conv_out`.
        tanh_out: squash the output with tanh.
    `in_channels` and `double_z` are accepted and ignored.
    """

    def __init__(self, *, ch: int, out_ch: int, ch_mult: Sequence[int] = (1, 2, 4, 8),
                 num_res_blocks: int, attn_resolutions: Sequence[int], dropout: float = 0.0,
                 resamp_with_conv: bool = True, in_channels: int | None = None, resolution: int,
                 z_channels: int, give_pre_end: bool = False, tanh_out: bool = False,
                 use_linear_attn: bool = False, attn_type: str = "vanilla", **ignorekwargs):
        super().__init__()
        if use_linear_attn:
            attn_type = "linear"
        _check_channels(ch, ch_mult)
        self.ch = ch
        self.temb_ch = 0
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.resolution = resolution
        self.in_channels = in_channels
        self.z_channels = z_channels
        self.give_pre_end = give_pre_end
        self.tanh_out = tanh_out

        block_in = ch * ch_mult[-1]
        curr_res = resolution // 2 ** (self.num_resolutions - 1)
        self.z_shape = (1, z_channels, curr_res, curr_res)
        logger.debug("Working with z of shape %s = %d dimensions.", self.z_shape, z_channels * curr_res ** 2)

        self.conv_in = nn.Conv2d(z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(in_channels=block_in, out_channels=block_in,
                                       temb_channels=self.temb_ch, dropout=dropout)
        self.mid.attn_1 = make_attn(block_in, attn_type=attn_type)
        self.mid.block_2 = ResnetBlock(in_channels=block_in, out_channels=block_in,
                                       temb_channels=self.temb_ch, dropout=dropout)

        self.up = nn.ModuleList()
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks + 1):
                block.append(ResnetBlock(in_channels=block_in, out_channels=block_out,
                                         temb_channels=self.temb_ch, dropout=dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(make_attn(block_in, attn_type=attn_type))
            up = nn.Module()
            up.block = block
            up.attn = attn
            if i_level != 0:
                up.upsample = Upsample(block_in, resamp_with_conv)
                curr_res = curr_res * 2
            self.up.insert(0, up)  # prepend: up[0] is the highest resolution, as in the checkpoints

        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim != 4 or z.shape[1] != self.z_channels:
            raise ValueError(f"expected latents of shape [B, {self.z_channels}, h, w], got {list(z.shape)}")
        self.last_z_shape = z.shape
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i_level in reversed(range(self.num_resolutions)):
            up = self.up[i_level]
            for i_block in range(self.num_res_blocks + 1):
                h = up.block[i_block](h)
                if len(up.attn) > 0:
                    h = up.attn[i_block](h)
            if i_level != 0:
                h = up.upsample(h)
        if self.give_pre_end:
            return h
        h = self.conv_out(nonlinearity(self.norm_out(h)))
        return torch.tanh(h) if self.tanh_out else h
