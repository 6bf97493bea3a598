"""The BERT-style text transformer of the LDM text-to-image and layout-to-image models.

A trimmed re-implementation of the parts of lucidrains' x-transformers (0.x) that the
original `BERTEmbedder` used: `TransformerWrapper(num_tokens, max_seq_len,
attn_layers=Encoder(dim, depth))` with learned absolute positions, pre-norm residual layers
alternating attention ('a') and feed-forward ('f'), and a final LayerNorm. Key layout
(`token_emb`, `pos_emb.emb`, `attn_layers.layers.{i}.{0,1}`, `norm`, `to_logits`) equals the
released `cond_stage_model.transformer.*` entries.

Note the attention width: 8 heads of 64 whatever `dim` is (the x-transformers defaults that
`BERTEmbedder` never overrode), so `to_q` is [512, dim] for every released model.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ldm.modules.attention import DEFAULT_ATTENTION_BACKEND, check_backend, scaled_dot_product

DEFAULT_HEADS = 8
DEFAULT_DIM_HEAD = 64


class AbsolutePositionalEmbedding(nn.Module):
    """Learned positions: rows 0..N-1 of an [max_seq_len, dim] table, shaped [1, N, dim]."""

    def __init__(self, dim: int, max_seq_len: int):
        super().__init__()
        self.emb = nn.Embedding(max_seq_len, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = torch.arange(x.shape[1], device=x.device)
        return self.emb(n)[None, :, :]


class Attention(nn.Module):
    """Bidirectional multi-head self-attention (no bias on q, k, v; bias on the output).

    Args:
        dim: token width.
        heads: number of heads.
        dim_head: width per head.
        dropout: dropout on the output of the attention.
    """

    def __init__(self, dim: int, heads: int = DEFAULT_HEADS, dim_head: int = DEFAULT_DIM_HEAD,
                 dropout: float = 0.0, backend: str = DEFAULT_ATTENTION_BACKEND):
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.attention_backend = check_backend(backend)
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_k = nn.Linear(dim, inner_dim, bias=False)
        self.to_v = nn.Linear(dim, inner_dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.to_out = nn.Linear(inner_dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, N, dim]; mask [B, N] bool, True for tokens that may be attended to."""
        q, k, v = (rearrange(f(x), "b n (h d) -> b h n d", h=self.heads) for f in (self.to_q, self.to_k, self.to_v))
        if mask is not None:
            mask = mask[:, None, None, :].bool()
        out = scaled_dot_product(q, k, v, scale=self.scale, mask=mask, backend=self.attention_backend)
        return self.to_out(self.dropout(rearrange(out, "b h n d -> b n (h d)")))


class FeedForward(nn.Module):
    """Linear(dim, mult*dim) -> GELU (exact) -> dropout -> Linear(mult*dim, dim)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner_dim = dim * mult
        self.net = nn.Sequential(nn.Sequential(nn.Linear(dim, inner_dim), nn.GELU()), nn.Dropout(dropout),
                                 nn.Linear(inner_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PreNormResidual(nn.ModuleList):
    """`fn(norm(x)) + x`; a ModuleList [norm, fn] so that the keys are `{i}.0.*` and `{i}.1.*`."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__([nn.LayerNorm(dim), fn])

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        norm, fn = self[0], self[1]
        return fn(norm(x), **kwargs) + x


class Encoder(nn.Module):
    """`depth` pairs of pre-norm self-attention and feed-forward layers.

    Args:
        dim: token width.
        depth: number of (attention, feed-forward) pairs.
        heads: attention heads.
        dim_head: width per head.
        ff_mult: feed-forward width multiplier.
        attn_dropout: dropout in attention.
        ff_dropout: dropout in the feed-forward.
    """

    def __init__(self, dim: int, depth: int, heads: int = DEFAULT_HEADS, dim_head: int = DEFAULT_DIM_HEAD,
                 ff_mult: int = 4, attn_dropout: float = 0.0, ff_dropout: float = 0.0):
        super().__init__()
        self.dim = dim
        self.layer_types = ("a", "f") * depth
        self.layers = nn.ModuleList([
            PreNormResidual(dim, Attention(dim, heads, dim_head, attn_dropout) if kind == "a"
                            else FeedForward(dim, ff_mult, ff_dropout))
            for kind in self.layer_types
        ])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for kind, layer in zip(self.layer_types, self.layers):
            x = layer(x, mask=mask) if kind == "a" else layer(x)
        return x


class TransformerWrapper(nn.Module):
    """Token + position embedding, an `Encoder`, a final LayerNorm and (optional) logits.

    Args:
        num_tokens: vocabulary size.
        max_seq_len: number of learned positions.
        attn_layers: the `Encoder`.
        emb_dim: embedding width (default: the encoder's width; projected when different).
        emb_dropout: dropout after the embeddings.
        use_pos_emb: add learned absolute positions.
    """

    def __init__(self, num_tokens: int, max_seq_len: int, attn_layers: Encoder, emb_dim: int | None = None,
                 emb_dropout: float = 0.0, use_pos_emb: bool = True):
        super().__init__()
        dim = attn_layers.dim
        emb_dim = dim if emb_dim is None else emb_dim
        self.max_seq_len = max_seq_len
        self.num_tokens = num_tokens
        self.token_emb = nn.Embedding(num_tokens, emb_dim)
        self.pos_emb = AbsolutePositionalEmbedding(emb_dim, max_seq_len) if use_pos_emb else None
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.project_emb = nn.Linear(emb_dim, dim) if emb_dim != dim else nn.Identity()
        self.attn_layers = attn_layers
        self.norm = nn.LayerNorm(dim)
        # Present in the released checkpoints; BERTEmbedder never applies it.
        self.to_logits = nn.Linear(dim, num_tokens)

    def forward(self, x: torch.Tensor, return_embeddings: bool = False,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids [B, N] (N <= max_seq_len) -> embeddings [B, N, dim] or logits."""
        if x.shape[1] > self.max_seq_len:
            raise ValueError(f"sequence length {x.shape[1]} exceeds max_seq_len {self.max_seq_len}")
        h = self.token_emb(x)
        if self.pos_emb is not None:
            h = h + self.pos_emb(h)
        h = self.project_emb(self.emb_dropout(h))
        h = self.norm(self.attn_layers(h, mask=mask))
        return h if return_embeddings else self.to_logits(h)
