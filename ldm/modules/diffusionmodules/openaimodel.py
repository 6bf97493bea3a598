"""The time-conditional UNet of latent diffusion (LDM Sec. 3.3, after Dhariwal & Nichol 2021).

`UNetModel` takes every constructor parameter of the released LDM / Stable Diffusion 1.x
configs and the UNet options of the SD 2.x line (`use_linear_in_transformer`,
`num_classes: "sequential"` with `adm_in_channels`, `disable_self_attentions`,
`num_attention_blocks`, `disable_middle_self_attn`). Its state-dict layout equals the
released checkpoints' `model.diffusion_model.*`; with the same weights it gives the original's
outputs to float32 round-off.

Conditioning: `context` [B, M, context_dim] enters every `SpatialTransformer` by
cross-attention; `y` (class labels, or ADM vectors for "sequential") is embedded and added to
the timestep embedding; concat conditioning is the caller's `cat([x, c], dim=1)`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from ldm.modules.attention import SpatialTransformer
from ldm.modules.diffusionmodules.unet_attention import (  # noqa: F401  (re-exported)
    AttentionBlock,
    AttentionPool2d,
    QKVAttention,
    QKVAttentionLegacy,
)
from ldm.modules.diffusionmodules.unet_blocks import (  # noqa: F401  (re-exported)
    Downsample,
    ResBlock,
    TimestepBlock,
    TimestepEmbedSequential,
    Upsample,
)
from ldm.modules.diffusionmodules.util import conv_nd, linear, normalization, timestep_embedding, zero_module

logger = logging.getLogger(__name__)

__all__ = [
    "UNetModel", "EncoderUNetModel", "TimestepBlock", "TimestepEmbedSequential", "ResBlock", "Upsample",
    "Downsample", "AttentionBlock", "AttentionPool2d", "QKVAttentionLegacy", "QKVAttention",
    "attention_head_layout",
]


def attention_head_layout(ch: int, num_heads: int, num_head_channels: int, legacy: bool,
                          use_spatial_transformer: bool) -> tuple[int, int]:
    """(heads, dim_head) of an attention module at `ch` channels, as the original computes them.

    With `num_head_channels == -1` there are `num_heads` heads of `ch // num_heads`; otherwise
    `ch // num_head_channels` heads of `num_head_channels`. `legacy` only changes `dim_head`
    of `AttentionBlock`s to `num_head_channels` (possibly -1, meaning "use the head count").
    """
    if num_head_channels == -1:
        dim_head = ch // num_heads
    else:
        num_heads = ch // num_head_channels
        dim_head = num_head_channels
    if legacy:
        dim_head = ch // num_heads if use_spatial_transformer else num_head_channels
    return num_heads, dim_head


def _per_level(value: int | Sequence[int], levels: int, name: str) -> list[int]:
    """An int repeated once per resolution level, or a list already given per level."""
    if isinstance(value, int):
        return [value] * levels
    value = list(value)
    if len(value) != levels:
        raise ValueError(f"{name} must be an int or have one entry per channel_mult level ({levels}), got {value}")
    return value


def _down_path(in_channels: int, model_channels: int, num_res_blocks: list[int], channel_mult: Sequence[int],
               attention_resolutions: Sequence[int], dims: int, res: Callable[..., nn.Module],
               attention: Callable[[int, int, int], nn.Module | None], resblock_updown: bool,
               conv_resample: bool) -> tuple[nn.ModuleList, list[int], int, int]:
    """Input blocks: conv_in, then per level `num_res_blocks` ResBlocks (+ attention where the
    downsample factor is in `attention_resolutions`) and a downsampling block except after the
    last level. Returns the blocks, their output channels, the final channels and factor."""
    blocks = nn.ModuleList([TimestepEmbedSequential(conv_nd(dims, in_channels, model_channels, 3, padding=1))])
    chans, ch, ds = [model_channels], model_channels, 1
    for level, mult in enumerate(channel_mult):
        for nr in range(num_res_blocks[level]):
            layers = [res(ch, out_channels=mult * model_channels)]
            ch = mult * model_channels
            if ds in attention_resolutions and (attn := attention(ch, level, nr)) is not None:
                layers.append(attn)
            blocks.append(TimestepEmbedSequential(*layers))
            chans.append(ch)
        if level != len(channel_mult) - 1:
            down = res(ch, out_channels=ch, down=True) if resblock_updown else \
                Downsample(ch, conv_resample, dims=dims, out_channels=ch)
            blocks.append(TimestepEmbedSequential(down))
            chans.append(ch)
            ds *= 2
    return blocks, chans, ch, ds


class UNetModel(nn.Module):
    """The full UNet with attention and timestep embedding.

    Args:
        image_size: latent side length (recorded only; the UNet is fully convolutional).
        in_channels: input channels (latent channels, plus concat-conditioning channels).
        model_channels: base channel count.
        out_channels: output channels.
        num_res_blocks: ResBlocks per level (an int, or one per level as in SD 2.x).
        attention_resolutions: downsample factors (1, 2, 4, ...) that get attention.
        dropout: dropout in the ResBlocks.
        channel_mult: channel multiplier per level.
        conv_resample: learned 3x3 convs for up/downsampling.
        dims: 1, 2 or 3 (signal dimensionality).
        num_classes: class-conditional with this many classes (`y` int labels), "continuous"
            (`y` [B, 1]) or "sequential" (`y` [B, adm_in_channels], SD 2.x unCLIP/upscaler).
        use_checkpoint: gradient checkpointing of ResBlocks, attention and transformer blocks.
        use_fp16: run the torso in float16 (norms stay float32).
        use_bf16: run the torso in bfloat16 (norms stay float32).
        num_heads: attention heads (when `num_head_channels` is -1).
        num_head_channels: fixed width per head (overrides `num_heads`).
        num_heads_upsample: heads of the decoder's `AttentionBlock`s (default `num_heads`).
        use_scale_shift_norm: FiLM-like timestep conditioning in the ResBlocks.
        resblock_updown: ResBlocks that resample instead of Upsample/Downsample layers.
        use_new_attention_order: `QKVAttention` instead of `QKVAttentionLegacy`.
        use_spatial_transformer: `SpatialTransformer` (cross-attention) instead of `AttentionBlock`.
        transformer_depth: transformer blocks per `SpatialTransformer`.
        context_dim: width of the cross-attention context (needs `use_spatial_transformer`).
        n_embed: predict logits over a VQ codebook of this size (`id_predictor`) instead of `out`.
        legacy: the original's head-size rule (see `attention_head_layout`).
        disable_self_attentions: per level, make the transformers' attn1 cross-attention (SD 2.x).
        num_attention_blocks: per level, how many of the ResBlocks get attention (SD 2.x).
        disable_middle_self_attn: the same as `disable_self_attentions` for the middle block.
        use_linear_in_transformer: Linear instead of 1x1-conv proj_in/proj_out (SD 2.x).
        adm_in_channels: width of `y` for `num_classes: "sequential"`.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int | Sequence[int],
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        num_classes: int | str | None = None,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        use_bf16: bool = False,
        num_heads: int = -1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        use_spatial_transformer: bool = False,
        transformer_depth: int = 1,
        context_dim: int | Sequence[int] | None = None,
        n_embed: int | None = None,
        legacy: bool = True,
        disable_self_attentions: Sequence[bool] | None = None,
        num_attention_blocks: Sequence[int] | None = None,
        disable_middle_self_attn: bool = False,
        use_linear_in_transformer: bool = False,
        adm_in_channels: int | None = None,
    ):
        super().__init__()
        _check_arguments(use_spatial_transformer, context_dim, num_heads, num_head_channels)
        if context_dim is not None and not isinstance(context_dim, int):
            context_dim = list(context_dim)  # an OmegaConf ListConfig from a YAML file
        channel_mult, attention_resolutions = tuple(channel_mult), tuple(attention_resolutions)
        levels = len(channel_mult)
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = _per_level(num_res_blocks, levels, "num_res_blocks")
        self.attention_resolutions = attention_resolutions
        self.dropout = dropout
        self.channel_mult = channel_mult
        self.conv_resample = conv_resample
        self.num_classes = num_classes
        self.use_checkpoint = use_checkpoint
        self.dtype = torch.bfloat16 if use_bf16 else torch.float16 if use_fp16 else torch.float32
        self.num_heads = num_heads
        self.num_head_channels = num_head_channels
        self.num_heads_upsample = num_heads if num_heads_upsample == -1 else num_heads_upsample
        self.predict_codebook_ids = n_embed is not None
        disabled_sa = list(disable_self_attentions) if disable_self_attentions is not None else [False] * levels
        if len(disabled_sa) != levels:
            raise ValueError(f"disable_self_attentions needs one entry per level ({levels}), got {disabled_sa}")
        if num_attention_blocks is not None:
            num_attention_blocks = _per_level(num_attention_blocks, levels, "num_attention_blocks")

        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            linear(model_channels, time_embed_dim), nn.SiLU(), linear(time_embed_dim, time_embed_dim),
        )
        if num_classes is not None:
            self.label_emb = _label_embedding(num_classes, time_embed_dim, adm_in_channels)

        res = partial(ResBlock, emb_channels=time_embed_dim, dropout=dropout, dims=dims,
                      use_checkpoint=use_checkpoint, use_scale_shift_norm=use_scale_shift_norm)
        attention = partial(
            self._attention, legacy=legacy, use_spatial_transformer=use_spatial_transformer,
            transformer_depth=transformer_depth, context_dim=context_dim,
            use_linear=use_linear_in_transformer, use_new_attention_order=use_new_attention_order,
        )

        def wanted(level: int, index: int) -> bool:
            return num_attention_blocks is None or index < num_attention_blocks[level]

        self.input_blocks, chans, ch, ds = _down_path(
            in_channels, model_channels, self.num_res_blocks, channel_mult, attention_resolutions, dims, res,
            lambda c, level, nr: attention(c, disabled_sa[level]) if wanted(level, nr) else None,
            resblock_updown, conv_resample,
        )
        self.middle_block = TimestepEmbedSequential(res(ch), attention(ch, disable_middle_self_attn), res(ch))

        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(self.num_res_blocks[level] + 1):
                layers = [res(ch + chans.pop(), out_channels=model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions and wanted(level, i):
                    layers.append(attention(ch, disabled_sa[level], upsample=True))
                if level and i == self.num_res_blocks[level]:
                    layers.append(res(ch, out_channels=ch, up=True) if resblock_updown else
                                  Upsample(ch, conv_resample, dims=dims, out_channels=ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 zero_module(conv_nd(dims, ch, out_channels, 3, padding=1)))
        if self.predict_codebook_ids:
            self.id_predictor = nn.Sequential(normalization(ch), conv_nd(dims, ch, n_embed, 1))
        if self.dtype != torch.float32:
            self.convert_to_fp16()

    def _attention(self, ch: int, disable_self_attn: bool, *, legacy: bool, use_spatial_transformer: bool,
                   transformer_depth: int, context_dim, use_linear: bool, use_new_attention_order: bool,
                   upsample: bool = False) -> nn.Module:
        """The attention module at `ch` channels: SpatialTransformer or AttentionBlock."""
        heads, dim_head = attention_head_layout(ch, self.num_heads, self.num_head_channels, legacy,
                                                use_spatial_transformer)
        if use_spatial_transformer:
            return SpatialTransformer(ch, heads, dim_head, depth=transformer_depth, context_dim=context_dim,
                                      disable_self_attn=disable_self_attn, use_linear=use_linear,
                                      use_checkpoint=self.use_checkpoint)
        # The decoder's AttentionBlocks take `num_heads_upsample` (the original's quirk: it
        # only matters when dim_head is -1, i.e. legacy without num_head_channels).
        return AttentionBlock(ch, use_checkpoint=self.use_checkpoint,
                              num_heads=self.num_heads_upsample if upsample else heads,
                              num_head_channels=dim_head, use_new_attention_order=use_new_attention_order)

    def _torso(self) -> list[nn.Module]:
        return [self.input_blocks, self.middle_block, self.output_blocks]

    def convert_to_fp16(self) -> None:
        """Cast the torso's convs, linears and layer norms to `self.dtype` (group norms stay fp32)."""
        dtype = self.dtype if self.dtype != torch.float32 else torch.float16
        self.dtype = dtype
        for part in self._torso():
            part.apply(partial(_cast_weights, dtype=dtype))

    def convert_to_fp32(self) -> None:
        """Cast the torso back to float32."""
        self.dtype = torch.float32
        for part in self._torso():
            part.float()

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context=None, y: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        """Predict from `x` [B, C, ...] at `timesteps` [B] (int or float).

        `context` [B, M, context_dim] for cross-attention (or a list, one per transformer
        block); `y` [B] class labels (or [B, adm_in_channels]) iff `num_classes` is set.
        """
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("y must be given if and only if the model is class-conditional (num_classes)")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels, repeat_only=False))
        if self.num_classes is not None:
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"y has batch size {y.shape[0]}, x has {x.shape[0]}")
            emb = emb + self.label_emb(y)
        h = x.type(self.dtype)
        if self.dtype != torch.float32:
            emb = emb.type(self.dtype)
            context = _cast_context(context, self.dtype)
        hs = []
        for module in self.input_blocks:
            h = module(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb, context)
        h = h.type(x.dtype)
        return self.id_predictor(h) if self.predict_codebook_ids else self.out(h)


class EncoderUNetModel(nn.Module):
    """The encoder half of the UNet with a pooling head (noisy-image classifiers, guided diffusion).

    Args: as `UNetModel`, plus
        pool: "adaptive" (average pool + 1x1 conv), "attention" (`AttentionPool2d`, needs
            `num_head_channels`), "spatial" or "spatial_v2" (MLP over the spatial means of
            every block).
    """

    def __init__(self, image_size: int, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: int | Sequence[int], attention_resolutions: Sequence[int], dropout: float = 0.0,
                 channel_mult: Sequence[int] = (1, 2, 4, 8), conv_resample: bool = True, dims: int = 2,
                 use_checkpoint: bool = False, use_fp16: bool = False, num_heads: int = 1,
                 num_head_channels: int = -1, num_heads_upsample: int = -1, use_scale_shift_norm: bool = False,
                 resblock_updown: bool = False, use_new_attention_order: bool = False, pool: str = "adaptive"):
        super().__init__()
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = _per_level(num_res_blocks, len(channel_mult), "num_res_blocks")
        self.dtype = torch.float16 if use_fp16 else torch.float32
        self.pool = pool
        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            linear(model_channels, time_embed_dim), nn.SiLU(), linear(time_embed_dim, time_embed_dim),
        )
        res = partial(ResBlock, emb_channels=time_embed_dim, dropout=dropout, dims=dims,
                      use_checkpoint=use_checkpoint, use_scale_shift_norm=use_scale_shift_norm)
        attention = partial(AttentionBlock, use_checkpoint=use_checkpoint, num_heads=num_heads,
                            num_head_channels=num_head_channels, use_new_attention_order=use_new_attention_order)
        self.input_blocks, chans, ch, ds = _down_path(
            in_channels, model_channels, self.num_res_blocks, channel_mult, attention_resolutions, dims, res,
            lambda c, level, nr: attention(c), resblock_updown, conv_resample,
        )
        self.middle_block = TimestepEmbedSequential(res(ch), attention(ch), res(ch))
        feature_size = sum(chans) + ch
        self.out = _pool_head(pool, ch, out_channels, dims, image_size // ds, num_head_channels, feature_size)
        if use_fp16:
            for part in (self.input_blocks, self.middle_block):
                part.apply(partial(_cast_weights, dtype=torch.float16))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W], timesteps [B] -> [B, out_channels]."""
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        spatial = self.pool.startswith("spatial")
        results = []
        h = x.type(self.dtype)
        emb = emb.type(self.dtype)
        for module in self.input_blocks:
            h = module(h, emb)
            if spatial:
                results.append(h.type(x.dtype).mean(dim=(2, 3)))
        h = self.middle_block(h, emb)
        if spatial:
            results.append(h.type(x.dtype).mean(dim=(2, 3)))
            return self.out(torch.cat(results, dim=-1))
        return self.out(h.type(x.dtype))


def _pool_head(pool: str, ch: int, out_channels: int, dims: int, side: int, num_head_channels: int,
               feature_size: int) -> nn.Module:
    """The output head of `EncoderUNetModel`."""
    if pool == "adaptive":
        return nn.Sequential(normalization(ch), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                             zero_module(conv_nd(dims, ch, out_channels, 1)), nn.Flatten())
    if pool == "attention":
        if num_head_channels == -1:
            raise ValueError("pool='attention' needs num_head_channels")
        return nn.Sequential(normalization(ch), nn.SiLU(), AttentionPool2d(side, ch, num_head_channels, out_channels))
    if pool == "spatial":
        return nn.Sequential(nn.Linear(feature_size, 2048), nn.ReLU(), nn.Linear(2048, out_channels))
    if pool == "spatial_v2":
        return nn.Sequential(nn.Linear(feature_size, 2048), normalization(2048), nn.SiLU(),
                             nn.Linear(2048, out_channels))
    raise ValueError(f"unknown pool '{pool}'; expected adaptive, attention, spatial or spatial_v2")


def _label_embedding(num_classes: int | str, dim: int, adm_in_channels: int | None) -> nn.Module:
    """`label_emb`: an embedding table, or a projection of continuous / ADM vectors."""
    if isinstance(num_classes, int):
        return nn.Embedding(num_classes, dim)
    if num_classes == "continuous":
        logger.info("setting up linear c_adm embedding layer")
        return nn.Linear(1, dim)
    if num_classes == "sequential":
        if adm_in_channels is None:
            raise ValueError("num_classes: 'sequential' needs adm_in_channels")
        return nn.Sequential(nn.Sequential(linear(adm_in_channels, dim), nn.SiLU(), linear(dim, dim)))
    raise ValueError(f"num_classes must be an int, 'continuous' or 'sequential', got {num_classes!r}")


def _check_arguments(use_spatial_transformer: bool, context_dim, num_heads: int, num_head_channels: int) -> None:
    if use_spatial_transformer and context_dim is None:
        raise ValueError("use_spatial_transformer needs context_dim (the width of the cross-attention context)")
    if context_dim is not None and not use_spatial_transformer:
        raise ValueError("context_dim is set but use_spatial_transformer is False")
    if num_heads == -1 and num_head_channels == -1:
        raise ValueError("either num_heads or num_head_channels has to be set")


def _cast_weights(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast the parameters of convs, linears and layer norms (not group norms) to `dtype`."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.LayerNorm)):
        module.to(dtype)


def _cast_context(context, dtype: torch.dtype):
    if context is None:
        return None
    if isinstance(context, (list, tuple)):
        return [_cast_context(c, dtype) for c in context]
    return context.type(dtype)
