"""Key tables between our (released CompVis) layout and the diffusers folder layout, as data.

A table is a list of `(ours_prefix, diffusers_prefix, inner)` rows: a key is converted by
its longest matching block prefix, and the rest of the key by the longest matching fragment of
the row's `inner` table (identity when none matches). The same rows, read the other way,
convert back. Rows are listed for the Stable Diffusion v1 layout (UNet: 4 levels of 2 res
blocks, cross-attention in the first 3; VAE: 4 levels of 2 res blocks), as the conversion
scripts of the diffusers project name them.
"""
from __future__ import annotations

import re

Inner = tuple[tuple[str, str], ...]
Row = tuple[str, str, Inner]

IDENTITY: Inner = ()
UNET_RESNET: Inner = (
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("emb_layers.1.", "time_emb_proj."),
    ("skip_connection.", "conv_shortcut."),
)
VAE_RESNET: Inner = (("nin_shortcut.", "conv_shortcut."),)
VAE_ATTENTION: Inner = (
    ("norm.", "group_norm."),
    ("q.", "to_q."),
    ("k.", "to_k."),
    ("v.", "to_v."),
    ("proj_out.", "to_out.0."),
)

UNET_ROWS: list[Row] = [
    ("time_embed.0.", "time_embedding.linear_1.", IDENTITY),
    ("time_embed.2.", "time_embedding.linear_2.", IDENTITY),
    ("input_blocks.0.0.", "conv_in.", IDENTITY),
    ("out.0.", "conv_norm_out.", IDENTITY),
    ("out.2.", "conv_out.", IDENTITY),
    ("middle_block.0.", "mid_block.resnets.0.", UNET_RESNET),
    ("middle_block.1.", "mid_block.attentions.0.", IDENTITY),
    ("middle_block.2.", "mid_block.resnets.1.", UNET_RESNET),
]
UNET_ROWS += [(f"input_blocks.{3 * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}.", UNET_RESNET)
              for i in range(4) for j in range(2)]
UNET_ROWS += [(f"input_blocks.{3 * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}.", IDENTITY)
              for i in range(3) for j in range(2)]
UNET_ROWS += [(f"input_blocks.{3 * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv.", IDENTITY)
              for i in range(3)]
UNET_ROWS += [(f"output_blocks.{3 * i + j}.0.", f"up_blocks.{i}.resnets.{j}.", UNET_RESNET)
              for i in range(4) for j in range(3)]
UNET_ROWS += [(f"output_blocks.{3 * i + j}.1.", f"up_blocks.{i}.attentions.{j}.", IDENTITY)
              for i in range(1, 4) for j in range(3)]
UNET_ROWS += [(f"output_blocks.{3 * i + 2}.{1 if i == 0 else 2}.conv.", f"up_blocks.{i}.upsamplers.0.conv.", IDENTITY)
              for i in range(3)]

VAE_ROWS: list[Row] = [("quant_conv.", "quant_conv.", IDENTITY), ("post_quant_conv.", "post_quant_conv.", IDENTITY)]
for part in ("encoder", "decoder"):
    VAE_ROWS += [
        (f"{part}.conv_in.", f"{part}.conv_in.", IDENTITY),
        (f"{part}.norm_out.", f"{part}.conv_norm_out.", IDENTITY),
        (f"{part}.conv_out.", f"{part}.conv_out.", IDENTITY),
        (f"{part}.mid.block_1.", f"{part}.mid_block.resnets.0.", VAE_RESNET),
        (f"{part}.mid.block_2.", f"{part}.mid_block.resnets.1.", VAE_RESNET),
        (f"{part}.mid.attn_1.", f"{part}.mid_block.attentions.0.", VAE_ATTENTION),
    ]
VAE_ROWS += [(f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}.", VAE_RESNET)
             for i in range(4) for j in range(2)]
VAE_ROWS += [(f"encoder.down.{i}.downsample.conv.", f"encoder.down_blocks.{i}.downsamplers.0.conv.", IDENTITY)
             for i in range(3)]
VAE_ROWS += [(f"decoder.up.{3 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}.", VAE_RESNET)
             for i in range(4) for j in range(3)]
VAE_ROWS += [(f"decoder.up.{3 - i}.upsample.conv.", f"decoder.up_blocks.{i}.upsamplers.0.conv.", IDENTITY)
             for i in range(3)]

TEXT_ROWS: list[Row] = [("text_model.", "text_model.", IDENTITY)]

# (diffusers sub-folder, weights file, our key prefix, rows)
COMPONENTS: tuple[tuple[str, str, str, list[Row]], ...] = (
    ("unet", "diffusion_pytorch_model.safetensors", "model.diffusion_model.", UNET_ROWS),
    ("vae", "diffusion_pytorch_model.safetensors", "first_stage_model.", VAE_ROWS),
    ("text_encoder", "model.safetensors", "cond_stage_model.transformer.", TEXT_ROWS),
)

# diffusers keys whose tensors are Linear weights where ours are 1x1 convolutions.
CONV1X1_AS_LINEAR = re.compile(r"mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$")
# Keys diffusers files may carry that our models do not have.
DIFFUSERS_EXTRAS = re.compile(r"(^|\.)position_ids$")


def _longest(key: str, pairs, src: int):
    best = None
    for pair in pairs:
        if key.startswith(pair[src]) and (best is None or len(pair[src]) > len(best[src])):
            best = pair
    return best


def convert_key(key: str, rows: list[Row], to_diffusers: bool = True) -> str | None:
    """Convert one key (relative to the component prefix); None when no row matches."""
    src, dst = (0, 1) if to_diffusers else (1, 0)
    row = _longest(key, rows, src)
    if row is None:
        return None
    rest = key[len(row[src]):]
    frag = _longest(rest, row[2], src)
    if frag is not None:
        rest = frag[dst] + rest[len(frag[src]):]
    return row[dst] + rest


def split_for_diffusers(keys) -> tuple[dict[str, dict[str, str]], list[str]]:
    """`{component: {our_key: diffusers_key}}` for our full keys, and the keys left over."""
    out: dict[str, dict[str, str]] = {name: {} for name, _, _, _ in COMPONENTS}
    rest = []
    for key in keys:
        for name, _, prefix, rows in COMPONENTS:
            if key.startswith(prefix):
                new = convert_key(key[len(prefix):], rows, to_diffusers=True)
                if new is not None:
                    out[name][key] = new
                    break
        else:
            rest.append(key)
    return out, rest


def from_diffusers_key(component: str, key: str) -> str | None:
    """Our full key for a diffusers key of `component` (None when no row matches)."""
    for name, _, prefix, rows in COMPONENTS:
        if name == component:
            new = convert_key(key, rows, to_diffusers=False)
            return None if new is None else prefix + new
    raise KeyError(f"unknown diffusers component '{component}'")
