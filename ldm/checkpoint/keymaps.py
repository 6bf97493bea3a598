"""Key-name rules of released checkpoints, as data.

* CLIP text encoder layout: the released SD v1 files (transformers 4.x) store
  `cond_stage_model.transformer.text_model.<rest>`; transformers 5.x builds `CLIPTextModel`
  without the `text_model.` level. Loading maps either layout onto the model's; saving always
  writes the released one.
* Harmless extras: keys that released files carry and a model built for inference does not
  have (dropped without noise); keys a model may have that released files lack (kept at
  their initial values without error).
* EMA: `LitEma` names a shadow after its parameter with the dots removed, under `model_ema.`.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")

# (released fragment, transformers-5 fragment): applied where the key continues with a CLIP name.
CLIP_TEXT_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("transformer.text_model.", "transformer."),
)
CLIP_TEXT_SUBKEYS: tuple[str, ...] = (
    "embeddings.token_embedding.", "embeddings.position_embedding.", "embeddings.position_ids",
    "encoder.layers.", "final_layer_norm.",
)

# Keys in a checkpoint that the model need not have: dropped silently.
HARMLESS_EXTRA_PATTERNS: tuple[re.Pattern[str], ...] = tuple(re.compile(p) for p in (
    r"^loss\.",                      # first stages: LPIPS / discriminator / logvar of training
    r"^first_stage_model\.loss\.",   # the same inside an LDM file
    r"(^|\.)position_ids$",          # CLIP: persistent in transformers 4.19, not in later ones
    r"^model_ema\.(decay|num_updates)$",  # EMA counters of pruned files, when EMA is off
    r"^lvlb_weights$",               # non-persistent in the original, saved by a few forks
))

# Keys the model may have that a checkpoint lacks: left at their initial values.
OPTIONAL_MISSING_PATTERNS: tuple[re.Pattern[str], ...] = tuple(re.compile(p) for p in (
    r"^loss\.",                      # training loss of a first stage (LPIPS brings its own weights)
    r"(^|\.)position_ids$",
    r"\.lora_[AB]$",                 # LoRA adapters added on top of released weights
    r"\.lora_[AB]\.weight$",
))

EMA_PREFIX = "model_ema."
EMA_COUNTERS = ("model_ema.decay", "model_ema.num_updates")
EMA_SOURCE_PREFIX = "model."  # LatentDiffusion's LitEma covers self.model (the DiffusionWrapper)


def matches_any(key: str, patterns: Iterable[re.Pattern[str]]) -> bool:
    return any(p.search(key) for p in patterns)


def ema_shadow_names(key: str) -> tuple[str, ...]:
    """Where a `LitEma` may keep the shadow of parameter `key`, most specific first.

    LatentDiffusion averages `self.model`: `model.diffusion_model.out.2.weight` ->
    `model_ema.diffusion_modelout2weight`. An autoencoder averages itself:
    `encoder.conv_in.weight` -> `model_ema.encoderconv_inweight`.
    """
    if key.startswith(EMA_PREFIX):
        return ()
    names = []
    if key.startswith(EMA_SOURCE_PREFIX):
        names.append(EMA_PREFIX + key[len(EMA_SOURCE_PREFIX):].replace(".", ""))
    names.append(EMA_PREFIX + key.replace(".", ""))
    return tuple(names)


def is_ema_shadow(key: str) -> bool:
    return key.startswith(EMA_PREFIX) and key not in EMA_COUNTERS


def _clip_variants(key: str) -> list[str]:
    """The other spellings of a CLIP text-encoder key (empty for any other key)."""
    out = []
    for released, v5 in CLIP_TEXT_LAYOUTS:
        for src, dst in ((released, v5), (v5, released)):
            idx = key.find(src)
            if idx < 0 or (idx > 0 and key[idx - 1] != "."):
                continue
            rest = key[idx + len(src):]
            if rest.startswith(CLIP_TEXT_SUBKEYS):
                out.append(key[:idx] + dst + rest)
    return out


def match_layout(state_dict: Mapping[str, T], model_keys: Iterable[str]) -> dict[str, T]:
    """Rename checkpoint keys whose alternative CLIP spelling is what the model has."""
    model_keys = set(model_keys)
    out: dict[str, T] = {}
    for key, value in state_dict.items():
        if key not in model_keys:
            for variant in _clip_variants(key):
                if variant in model_keys:
                    key = variant
                    break
        out[key] = value
    return out


def to_released_layout(state_dict: Mapping[str, T]) -> dict[str, T]:
    """The state dict with CLIP keys in the released `transformer.text_model.*` spelling."""
    out: dict[str, T] = {}
    for key, value in state_dict.items():
        for released, v5 in CLIP_TEXT_LAYOUTS:
            idx = key.find(v5)
            if idx >= 0 and (idx == 0 or key[idx - 1] == ".") and key[idx + len(v5):].startswith(CLIP_TEXT_SUBKEYS):
                key = key[:idx] + released + key[idx + len(v5):]
                break
        out[key] = value
    return out
