"""Self-attention over the pixels of a UNet feature map (the non-transformer attention path).

`AttentionBlock` is used by the UNets without `use_spatial_transformer` (the unconditional,
inpainting, super-resolution and semantic-synthesis LDMs); `AttentionPool2d` is the attention
pooling head of `EncoderUNetModel`. Re-exported by `ldm.modules.diffusionmodules.openaimodel`.
"""
from __future__ import annotations

import torch
from torch import nn

from ldm.modules.attention import DEFAULT_ATTENTION_BACKEND, check_backend, scaled_dot_product
from ldm.modules.diffusionmodules.util import checkpoint, conv_nd, normalization, zero_module


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
    """Attention over [N, ch, T] tensors (channels first, as the qkv convs produce them).

    Equals the original's `softmax((q * ch^-1/4)^T (k * ch^-1/4)) v` with the softmax in float32.
    """
    out = scaled_dot_product(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                             scale=q.shape[1] ** -0.5, backend=backend)
    return out.transpose(1, 2)


class QKVAttentionLegacy(nn.Module):
    """QKV attention whose input channels are laid out per head first: [(H, 3, ch), T].

    Args:
        n_heads: number of heads.
    """

    def __init__(self, n_heads: int, backend: str = DEFAULT_ATTENTION_BACKEND):
        super().__init__()
        self.n_heads = n_heads
        self.attention_backend = check_backend(backend)

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        """qkv [B, H * 3 * ch, T] -> [B, H * ch, T]."""
        bs, width, length = qkv.shape
        assert width % (3 * self.n_heads) == 0, "qkv width must be divisible by 3 * n_heads"
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)
        return _attend(q, k, v, self.attention_backend).reshape(bs, -1, length)


class QKVAttention(nn.Module):
    """QKV attention whose input channels are q, k, v first, then heads: [(3, H, ch), T].

    Args:
        n_heads: number of heads.
    """

    def __init__(self, n_heads: int, backend: str = DEFAULT_ATTENTION_BACKEND):
        super().__init__()
        self.n_heads = n_heads
        self.attention_backend = check_backend(backend)

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        """qkv [B, 3 * H * ch, T] -> [B, H * ch, T]."""
        bs, width, length = qkv.shape
        assert width % (3 * self.n_heads) == 0, "qkv width must be divisible by 3 * n_heads"
        ch = width // (3 * self.n_heads)
        q, k, v = (t.reshape(bs * self.n_heads, ch, length) for t in qkv.chunk(3, dim=1))
        return _attend(q, k, v, self.attention_backend).reshape(bs, -1, length)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all positions of a feature map, with a residual.

    GroupNorm32 -> `qkv` (Conv1d 1x1, C -> 3C) -> QKV attention -> `proj_out` (zero-init) -> `+ x`.

    Args:
        channels: channels of the feature map.
        num_heads: heads, used when `num_head_channels` is -1.
        num_head_channels: channels per head (overrides `num_heads` when not -1).
        use_checkpoint: gradient checkpointing. (The original hard-coded checkpointing on;
            it only changes the backward pass.)
        use_new_attention_order: `QKVAttention` (q, k, v split first) instead of
            `QKVAttentionLegacy` (heads split first).
    """

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 use_checkpoint: bool = False, use_new_attention_order: bool = False):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.use_checkpoint = use_checkpoint
        self.norm = normalization(channels)
        self.qkv = conv_nd(1, channels, channels * 3, 1)
        self.attention = (QKVAttention if use_new_attention_order else QKVAttentionLegacy)(self.num_heads)
        self.proj_out = zero_module(conv_nd(1, channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(self._forward, (x,), self.parameters(), self.use_checkpoint)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(x))))
        return (x + h).reshape(b, c, *spatial)


class AttentionPool2d(nn.Module):
    """Attention pooling of a feature map to one vector (CLIP's head), for `EncoderUNetModel`.

    Args:
        spacial_dim: side of the (square) feature map (the original's spelling).
        embed_dim: channels of the feature map.
        num_heads_channels: channels per head.
        output_dim: output width (default `embed_dim`).
    """

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads_channels: int, output_dim: int | None = None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spacial_dim**2 + 1) / embed_dim**0.5)
        self.qkv_proj = conv_nd(1, embed_dim, 3 * embed_dim, 1)
        self.c_proj = conv_nd(1, embed_dim, output_dim or embed_dim, 1)
        self.num_heads = embed_dim // num_heads_channels
        self.attention = QKVAttention(self.num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *_ = x.shape
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None, :, :].to(x.dtype)
        x = self.c_proj(self.attention(self.qkv_proj(x)))
        return x[:, :, 0]
