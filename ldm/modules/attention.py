"""Cross-attention and the spatial transformer of the latent diffusion UNet (LDM Sec. 3.3).

`CrossAttention` computes softmax(Q K^T / sqrt(d)) V through
`torch.nn.functional.scaled_dot_product_attention` (SDPA), so that flash and memory-efficient
kernels are used where the device has them; a plain "math" backend (explicit matmul and
float32 softmax) is kept for comparison and for the benchmark. Both give the original's
outputs to float32 round-off.

Parameter names and shapes follow the released checkpoints (`to_q`, `to_k`, `to_v`,
`to_out.0`, `ff.net.0.proj`, `ff.net.2`, `norm1..3`, `proj_in`, `proj_out`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ldm.modules.diffusionmodules.util import GroupNorm32, checkpoint, zero_module

ATTENTION_BACKENDS = ("sdpa", "math")
DEFAULT_ATTENTION_BACKEND = "sdpa"

Context = torch.Tensor | Sequence[torch.Tensor | None] | None


def check_backend(backend: str) -> str:
    """Return `backend` if it names an attention implementation, else raise ValueError."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend '{backend}'; expected one of {', '.join(ATTENTION_BACKENDS)}")
    return backend


def _slow_cpu_sdpa_backward(*tensors: torch.Tensor) -> bool:
    """True for bf16/fp16 CPU tensors that need gradients: PyTorch's CPU SDPA backward is 5-13x
    slower than the math path there (8x8 UNet attention at batch 128, 1 thread: 16.5 ms vs 3.2 ms
    for forward and backward), which made bf16-mixed training slower than float32."""
    q = tensors[0]
    return (q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and torch.is_grad_enabled()
            and any(t.requires_grad for t in tensors))


def scaled_dot_product(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
                       mask: torch.Tensor | None = None, backend: str = DEFAULT_ATTENTION_BACKEND) -> torch.Tensor:
    """softmax(q k^T * scale) v over tensors [..., n, d]; `scale` defaults to d^-1/2.

    `mask` is boolean, True where a query may attend to a key, broadcastable to [..., n, m].
    The softmax runs in float32 in both backends (SDPA kernels accumulate in float32; the math
    backend upcasts explicitly), so bf16/fp16 autocast does not lower its precision. "sdpa" takes
    the math path for reduced-precision CPU tensors that need gradients (see
    `_slow_cpu_sdpa_backward`).
    """
    if backend == "sdpa" and not _slow_cpu_sdpa_backward(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    check_backend(backend)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    sim = torch.matmul(q, k.transpose(-1, -2)) * scale
    if mask is not None:
        sim = sim.masked_fill(~mask, -torch.finfo(sim.dtype).max)
    attn = sim.float().softmax(dim=-1).to(v.dtype)
    return torch.matmul(attn, v)


def set_attention_backend(module: nn.Module, backend: str) -> nn.Module:
    """Switch every attention layer inside `module` to `backend` ("sdpa" or "math")."""
    check_backend(backend)
    for m in module.modules():
        if hasattr(m, "attention_backend"):
            m.attention_backend = backend
    return module


class GEGLU(nn.Module):
    """Gated GELU projection (Shazeer 2020): `x * gelu(gate)` with `x, gate = proj(x).chunk(2)`.

    Args:
        dim_in: input width.
        dim_out: output width (the projection has 2 * dim_out outputs).
    """

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    """Transformer MLP: project in (GELU or GEGLU), dropout, project out.

    Args:
        dim: input width.
        dim_out: output width (default `dim`).
        mult: hidden width multiplier.
        glu: use the gated GEGLU projection (keys `net.0.proj`) instead of Linear+GELU
            (keys `net.0.0`).
        dropout: dropout after the hidden activation.
    """

    def __init__(self, dim: int, dim_out: int | None = None, mult: int = 4, glu: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        inner_dim = int(dim * mult)
        dim_out = dim if dim_out is None else dim_out
        project_in = GEGLU(dim, inner_dim) if glu else nn.Sequential(nn.Linear(dim, inner_dim), nn.GELU())
        self.net = nn.Sequential(project_in, nn.Dropout(dropout), nn.Linear(inner_dim, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossAttention(nn.Module):
    """Multi-head attention of `x` to `context` (self-attention when `context` is None).

    Args:
        query_dim: width of `x`.
        context_dim: width of `context` (default `query_dim`).
        heads: number of heads.
        dim_head: width of each head (inner width `heads * dim_head`).
        dropout: dropout after the output projection.
        backend: "sdpa" (default) or "math"; also settable later through the
            `attention_backend` attribute or `set_attention_backend`.
    """

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 8, dim_head: int = 64,
                 dropout: float = 0.0, backend: str = DEFAULT_ATTENTION_BACKEND):
        super().__init__()
        inner_dim = dim_head * heads
        context_dim = query_dim if context_dim is None else context_dim
        self.scale = dim_head**-0.5
        self.heads = heads
        self.attention_backend = check_backend(backend)
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, N, query_dim], context [B, M, context_dim], mask [B, M] bool (True = attend)."""
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        if mask is not None:
            mask = rearrange(mask, "b ... -> b 1 1 (...)").bool()
        out = scaled_dot_product(q, k, v, scale=self.scale, mask=mask, backend=self.attention_backend)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class BasicTransformerBlock(nn.Module):
    """Pre-norm transformer block: self-attention, cross-attention, gated feed-forward.

    `x = attn1(norm1(x)) + x; x = attn2(norm2(x), context) + x; x = ff(norm3(x)) + x`.

    Args:
        dim: token width.
        n_heads: attention heads.
        d_head: width per head.
        dropout: dropout in attention outputs and the feed-forward.
        context_dim: width of the cross-attention context (None: attn2 is self-attention).
        gated_ff: GEGLU feed-forward (as all released models).
        checkpoint: recompute the block in backward (gradient checkpointing). The original
            always checkpointed transformer blocks (its default was True, whatever the UNet's
            `use_checkpoint` said); here it follows `use_checkpoint`. Outputs are identical.
        disable_self_attn: make attn1 attend to the context too (SD 2.x option).
    """

    def __init__(self, dim: int, n_heads: int, d_head: int, dropout: float = 0.0,
                 context_dim: int | None = None, gated_ff: bool = True, checkpoint: bool = False,
                 disable_self_attn: bool = False):
        super().__init__()
        self.disable_self_attn = disable_self_attn
        self.attn1 = CrossAttention(dim, context_dim=context_dim if disable_self_attn else None, heads=n_heads,
                                    dim_head=d_head, dropout=dropout)
        self.ff = FeedForward(dim, dropout=dropout, glu=gated_ff)
        self.attn2 = CrossAttention(dim, context_dim=context_dim, heads=n_heads, dim_head=d_head, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.checkpoint = checkpoint

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return checkpoint(self._forward, (x, context), self.parameters(), self.checkpoint)

    def _forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn1(self.norm1(x), context=context if self.disable_self_attn else None) + x
        x = self.attn2(self.norm2(x), context=context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Transformer over the pixels of a feature map, with cross-attention to a context.

    GroupNorm (eps 1e-6) -> proj_in -> tokens `b (h w) c` -> transformer blocks -> back to
    a map -> proj_out (zero-initialised) -> `+ x`.

    Args:
        in_channels: channels of the feature map.
        n_heads: attention heads.
        d_head: width per head (inner width `n_heads * d_head`).
        depth: number of transformer blocks.
        dropout: dropout inside the blocks.
        context_dim: width of the context (an int, or one per block).
        disable_self_attn: attn1 attends to the context too (SD 2.x option).
        use_linear: proj_in/proj_out are Linear layers on tokens (SD 2.x) instead of 1x1
            convolutions (SD 1.x and the LDM releases).
        use_checkpoint: gradient checkpointing of the transformer blocks.
    """

    def __init__(self, in_channels: int, n_heads: int, d_head: int, depth: int = 1, dropout: float = 0.0,
                 context_dim: int | Sequence[int] | None = None, disable_self_attn: bool = False,
                 use_linear: bool = False, use_checkpoint: bool = False):
        super().__init__()
        inner_dim = n_heads * d_head
        context_dims = _per_block(context_dim, depth)
        self.in_channels = in_channels
        self.use_linear = use_linear
        # GroupNorm32 has the keys and fp32 numerics of the original's nn.GroupNorm and keeps
        # the statistics in float32 when the UNet runs in half precision.
        self.norm = GroupNorm32(32, in_channels, eps=1e-6, affine=True)
        if use_linear:
            self.proj_in = nn.Linear(in_channels, inner_dim)
        else:
            self.proj_in = nn.Conv2d(in_channels, inner_dim, kernel_size=1, stride=1, padding=0)
        self.transformer_blocks = nn.ModuleList([
            BasicTransformerBlock(inner_dim, n_heads, d_head, dropout=dropout, context_dim=context_dims[d],
                                  checkpoint=use_checkpoint, disable_self_attn=disable_self_attn)
            for d in range(depth)
        ])
        if use_linear:
            self.proj_out = zero_module(nn.Linear(inner_dim, in_channels))
        else:
            self.proj_out = zero_module(nn.Conv2d(inner_dim, in_channels, kernel_size=1, stride=1, padding=0))

    def forward(self, x: torch.Tensor, context: Context = None) -> torch.Tensor:
        """x [B, C, H, W]; context [B, M, context_dim], or a list with one per block."""
        contexts = _per_block(context, len(self.transformer_blocks))
        _, _, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = rearrange(x, "b c h w -> b (h w) c")
        if self.use_linear:
            x = self.proj_in(x)
        for block, ctx in zip(self.transformer_blocks, contexts):
            x = block(x, context=ctx)
        if self.use_linear:
            x = self.proj_out(x)
        x = rearrange(x, "b (h w) c -> b c h w", h=h, w=w)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


def _per_block(value, depth: int) -> list:
    """`value` repeated `depth` times, or `value` itself when it is already one per block."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        return [value] * depth
    value = list(value)
    if len(value) == 1:
        return value * depth
    if len(value) != depth:
        raise ValueError(f"expected one entry per transformer block ({depth}), got {len(value)}")
    return value
