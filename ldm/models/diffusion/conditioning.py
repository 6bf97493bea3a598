"""Conditions: reading them from a batch, encoding them, and dropping them for guidance training.

`ConditioningDropout` replaces, per condition key, a random fraction of a batch's conditions by
a null value (an empty caption, a null class, zeros), which trains the unconditional model that
classifier-free guidance needs (Ho & Salimans 2022, Sec. 3.2). The config is a mapping
`{key: {p: probability, val: null value}}` (Stable Diffusion 2's `ucg_training` layout) or
`{key: probability}`.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

logger = logging.getLogger(__name__)

# Condition keys whose batch values go to the condition encoder as they are (strings, token
# ids), and the key whose encoder reads the whole batch dict (ClassEmbedder); as the original.
RAW_CONDITION_KEYS = ("caption", "coordinates_bbox", "txt")
BATCH_CONDITION_KEYS = ("class_label",)


def batch_to_tensor(batch: Mapping[str, Any], key: str) -> Tensor:
    """`batch[key]` as a contiguous float [B, C, H, W] tensor from the data sets' [B, H, W, C]
    (a [B, H, W] value gets a channel axis first), as the original `DDPM.get_input`."""
    x = batch[key]
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.ndim == 3:
        x = x[..., None]
    x = rearrange(x, "b h w c -> b c h w")
    return x.to(memory_format=torch.contiguous_format).float()


def condition_input(batch: Mapping[str, Any], cond_key: str, device: torch.device | str) -> Any:
    """What the condition encoder receives for `cond_key`: the raw value for text and token keys,
    the whole batch for `class_label`, a [B, C, H, W] tensor on `device` for image-like keys."""
    if cond_key in RAW_CONDITION_KEYS:
        return batch[cond_key]
    if cond_key in BATCH_CONDITION_KEYS:
        return batch
    value = batch[cond_key]
    if isinstance(value, Tensor) and value.ndim >= 3:
        return batch_to_tensor(batch, cond_key).to(device)
    return value


def encode_condition(cond_stage_model: nn.Module, c: Any, cond_stage_forward: str | None = None) -> Any:
    """Run the condition encoder: `cond_stage_forward` if named, else `encode` when the model
    has one (a Gaussian posterior gives its mode), else `forward`; as the original
    `get_learned_conditioning`."""
    if cond_stage_model is None:
        raise ValueError("this model has no condition encoder (cond_stage_config is '__is_unconditional__')")
    if cond_stage_forward is not None:
        if not hasattr(cond_stage_model, cond_stage_forward):
            raise AttributeError(f"cond_stage_forward: {type(cond_stage_model).__name__} has no method "
                                 f"'{cond_stage_forward}'")
        return getattr(cond_stage_model, cond_stage_forward)(c)
    encode = getattr(cond_stage_model, "encode", None)
    if callable(encode):
        c = encode(c)
        mode = getattr(c, "mode", None)
        if callable(mode) and not isinstance(c, Tensor):  # a DiagonalGaussianDistribution
            c = mode()
        return c
    return cond_stage_model(c)


def slice_batch(value: Any, n: int | None) -> Any:
    """The first `n` entries of a tensor, list or dict of them (`n` None: unchanged)."""
    if n is None:
        return value
    if isinstance(value, Mapping):
        return {k: slice_batch(v, n) for k, v in value.items()}
    if isinstance(value, (Tensor, list, tuple)):
        return value[:n]
    return value


def batch_size_of(value: Any) -> int:
    """The number of samples in a batch value (tensor rows or list entries)."""
    if isinstance(value, Tensor):
        return int(value.shape[0])
    return len(value)


class ConditioningDropout:
    """Per-key random replacement of conditions by a null value (classifier-free guidance).

    Args:
        config: `{key: {"p": probability, "val": null value}}` or `{key: probability}`. The null
            value defaults to "" for strings and 0 for tensors; a tensor value fills the dropped
            rows (broadcast), None means zeros.
        generator: optional torch generator for the drop decisions (default: the global RNG).
    """

    def __init__(self, config: Mapping[str, Any] | None, generator: torch.Generator | None = None):
        self.rules: dict[str, tuple[float, Any]] = {}
        for key, rule in dict(config or {}).items():
            if isinstance(rule, Mapping):
                p, val = float(rule.get("p", 0.0)), rule.get("val", None)
            else:
                p, val = float(rule), None
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"conditioning dropout for '{key}': probability must be in [0, 1], got {p}")
            self.rules[str(key)] = (p, val)
        self.generator = generator

    def __bool__(self) -> bool:
        return any(p > 0 for p, _ in self.rules.values())

    def probability(self, key: str) -> float:
        return self.rules.get(key, (0.0, None))[0]

    def null_value(self, key: str, default: Any = None) -> Any:
        """The configured null value of `key` (`default` when the key has no rule or no value)."""
        val = self.rules.get(key, (0.0, None))[1]
        return default if val is None else val

    def drop_mask(self, n: int, p: float) -> Tensor:
        """A bool [n] tensor, True where a condition is dropped (each with probability p)."""
        if p <= 0:
            return torch.zeros(n, dtype=torch.bool)
        return torch.rand(n, generator=self.generator) < p

    def apply(self, batch: Mapping[str, Any], skip: tuple[str, ...] = (),
              nulls: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A shallow copy of `batch` with the configured keys' conditions randomly nulled;
        `nulls` gives null values for keys whose rule has none."""
        out = dict(batch)
        for key, (p, val) in self.rules.items():
            if key in skip or key not in out or p <= 0:
                continue
            if val is None and nulls is not None:
                val = nulls.get(key)
            value = out[key]
            mask = self.drop_mask(batch_size_of(value), p)
            out[key] = replace_rows(value, mask, val)
        return out


def replace_rows(value: Any, mask: Tensor, null: Any) -> Any:
    """`value` with the rows where `mask` is True replaced by `null`.

    Lists of strings get `null` (default ""); tensors get `null` broadcast to a row (None: zeros,
    a tensor: its values). The input is not modified.
    """
    if not bool(mask.any()):
        return value
    if isinstance(value, Tensor):
        out = value.clone()
        rows = mask.to(value.device)
        if null is None:
            out[rows] = 0
        else:
            fill = torch.as_tensor(null, dtype=value.dtype, device=value.device)
            out[rows] = fill.expand_as(out[rows]) if fill.ndim else fill
        return out
    if isinstance(value, (list, tuple)):
        fill = "" if null is None else null
        replaced = [fill if drop else v for v, drop in zip(value, mask.tolist())]
        return type(value)(replaced) if isinstance(value, tuple) else replaced
    raise TypeError(f"conditioning dropout cannot null a value of type {type(value).__name__}")


def null_condition_input(key: str, null: Any, batch_size: int, device: torch.device | str) -> Any:
    """The encoder input for `batch_size` null conditions of `key` (e.g. ["", ""] for captions,
    {"class_label": tensor([1000, 1000])} for classes)."""
    if isinstance(null, str):
        value: Any = [null] * batch_size
    elif isinstance(null, Tensor):
        value = null.to(device).expand(batch_size, *null.shape[1:]) if null.ndim else null.repeat(batch_size)
    else:
        value = torch.full((batch_size,), null, device=device) if isinstance(null, (int, float)) \
            else torch.as_tensor(null, device=device)
    if key in BATCH_CONDITION_KEYS:
        return {key: value}
    return value
