"""`load_state_dict_into`: strict, explained loading of a state dict into a model.

Order of operations (each step is one rule of `keymaps`):
1. drop checkpoint keys under `ignore_keys` prefixes (model keys there may then be missing);
2. with `use_ema`, replace every `model.*` weight by its `model_ema.*` shadow;
3. select and strip `prefix` (e.g. `"model."` to load into the DiffusionWrapper alone);
4. rename CLIP text-encoder keys to the layout the model uses;
5. EMA bookkeeping: a model without EMA drops `model_ema.*`; a model with EMA whose
   checkpoint has no shadows starts its EMA from the loaded weights;
6. drop known harmless extras;
7. fail with one message naming missing / unexpected / wrongly shaped keys grouped by prefix
   (or, if most keys do not match, say which model the file is for).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ldm.checkpoint import keymaps
from ldm.checkpoint.errors import CheckpointError, StateDictMismatchError
from ldm.checkpoint.reading import extract_state_dict

logger = logging.getLogger(__name__)

# Below this fraction of the model's keys found in the file, it is "a different model".
WRONG_MODEL_FRACTION = 0.5


@dataclass
class LoadReport:
    """What `load_state_dict_into` did, for logging and tests."""

    loaded: int = 0
    missing: list[str] = field(default_factory=list)          # allowed (ignored/optional) or non-strict
    unexpected: list[str] = field(default_factory=list)       # non-strict only
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    dropped_extras: list[str] = field(default_factory=list)   # harmless extras and ignored keys
    ema_copied: int = 0
    ema_initialised: int = 0


def group_keys(keys: Iterable[str], depth: int = 3) -> dict[str, list[str]]:
    """Keys grouped by their first `depth` dotted components (fewer for short keys)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        parts = key.split(".")
        n = min(depth, max(1, len(parts) - 1))
        groups[".".join(parts[:n])].append(".".join(parts[n:]))
    return dict(groups)


def describe_keys(keys: list[str], max_groups: int = 6, max_per_group: int = 3) -> str:
    """`2 keys: model.diffusion_model.out.{2.weight, 2.bias}` style one-line summary."""
    if not keys:
        return "0 keys"
    parts = []
    groups = group_keys(keys)
    for prefix, rest in list(groups.items())[:max_groups]:
        shown = ", ".join(r for r in rest[:max_per_group] if r)
        more = f", +{len(rest) - max_per_group} more" if len(rest) > max_per_group else ""
        parts.append(f"{prefix}.{{{shown}{more}}}" if shown else prefix)
    if len(groups) > max_groups:
        parts.append(f"+{len(groups) - max_groups} more groups")
    noun = "key" if len(keys) == 1 else "keys"
    return f"{len(keys)} {noun}: " + "; ".join(parts)


def _mismatch_message(source: str, missing: list[str], unexpected: list[str],
                      mismatched: list[tuple[str, tuple, tuple]]) -> str:
    parts = []
    if missing:
        parts.append("missing " + describe_keys(missing))
    if unexpected:
        parts.append("unexpected " + describe_keys(unexpected))
    if mismatched:
        shapes = ", ".join(f"{k} {list(a)} in file vs {list(b)} in model" for k, a, b in mismatched[:3])
        more = f", +{len(mismatched) - 3} more" if len(mismatched) > 3 else ""
        parts.append(f"wrong shape for {len(mismatched)}: {shapes}{more}")
    return (f"{source} does not match the model: " + " | ".join(parts)
            + " (allow them with ignore_keys prefixes or strict: false)")


def _apply_ema(sd: dict[str, torch.Tensor], source: str) -> int:
    shadows = [k for k in sd if keymaps.is_ema_shadow(k)]
    if not shadows:
        raise CheckpointError(f"{source}: has no EMA weights (model_ema.*); load it without use_ema / --use-ema-weights")
    copied = 0
    for key in list(sd):
        for shadow in keymaps.ema_shadow_names(key):
            if shadow in sd:
                sd[key] = sd[shadow]
                copied += 1
                break
    if copied == 0:
        raise CheckpointError(f"{source}: its model_ema.* names match none of its model.* weights")
    return copied


def _ema_bookkeeping(sd: dict[str, torch.Tensor], model_sd: Mapping[str, torch.Tensor],
                     report: LoadReport, source: str, use_ema: bool) -> None:
    model_has_ema = any(k.startswith(keymaps.EMA_PREFIX) for k in model_sd)
    shadows = [k for k in sd if keymaps.is_ema_shadow(k)]
    if not model_has_ema:
        if shadows and not use_ema:
            logger.info("%s: also holds EMA weights (%d tensors), not loaded; use_ema / "
                        "--use-ema-weights loads them instead of the raw weights", source, len(shadows))
        for key in [k for k in sd if k.startswith(keymaps.EMA_PREFIX)]:
            report.dropped_extras.append(key)
            del sd[key]
        return
    if shadows:
        return
    # A model that keeps an EMA, loaded from a file without one: start the EMA at the weights.
    for key, value in model_sd.items():
        for shadow in keymaps.ema_shadow_names(key):
            if shadow in model_sd:
                if shadow not in sd:
                    sd[shadow] = sd.get(key, value)
                    report.ema_initialised += 1
                break
    for key in keymaps.EMA_COUNTERS:
        if key in model_sd and key not in sd:
            sd[key] = model_sd[key]
    if report.ema_initialised:
        logger.info("%s: has no EMA weights; the model's EMA starts from the loaded weights (%d tensors)",
                    source, report.ema_initialised)


def _needs_assign(model: nn.Module) -> bool:
    tensors = list(model.parameters()) + list(model.buffers())
    return any(t.is_meta for t in tensors)


def load_state_dict_into(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    ignore_keys: Iterable[str] = (),
    strict: bool = True,
    use_ema: bool = False,
    prefix: str = "",
    assign: bool | None = None,
    source: str = "checkpoint",
) -> LoadReport:
    """Load `state_dict` (or a whole loaded checkpoint) into `model`, strictly by default.

    Args:
        model: the module to fill.
        state_dict: a state dict, or a checkpoint dict with a `"state_dict"` entry.
        ignore_keys: key prefixes to leave out of the file; model keys under them may stay at
            their initial values (the original's `ignore_keys` of `init_from_ckpt`).
        strict: fail on any missing, unexpected or wrongly shaped key (after the known
            harmless extras of released files are dropped). With False they are logged.
        use_ema: load the EMA weights (`model_ema.<name without dots>`) as the model weights.
        prefix: load only checkpoint keys under this prefix, stripped (e.g. `"model."`).
        assign: passed to `nn.Module.load_state_dict`; default True only for a model on the
            meta device (the checkpoint tensors then become the parameters).
        source: how to name the file in messages (usually its path).

    Raises:
        CheckpointError: the file is for another model, or has no EMA weights when asked;
            `StateDictMismatchError` (a CheckpointError) for key mismatches under `strict`.
    """
    report = LoadReport()
    sd = dict(extract_state_dict(state_dict))
    ignore = tuple(ignore_keys or ())
    if ignore:
        for key in [k for k in sd if k.startswith(ignore)]:
            report.dropped_extras.append(key)
            del sd[key]
    if use_ema:
        report.ema_copied = _apply_ema(sd, source)
        logger.info("%s: loaded EMA weights into %d model.* tensors", source, report.ema_copied)
    if prefix:
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    model_sd = model.state_dict()
    sd = keymaps.match_layout(sd, model_sd.keys())
    _ema_bookkeeping(sd, model_sd, report, source, use_ema and not prefix)

    unexpected = [k for k in sd if k not in model_sd]
    for key in unexpected:
        if keymaps.matches_any(key, keymaps.HARMLESS_EXTRA_PATTERNS):
            report.dropped_extras.append(key)
            del sd[key]
    unexpected = [k for k in sd if k not in model_sd]
    missing_all = [k for k in model_sd if k not in sd]
    allowed_missing = [k for k in missing_all
                       if k.startswith(ignore) and ignore
                       or keymaps.matches_any(k, keymaps.OPTIONAL_MISSING_PATTERNS)]
    missing = [k for k in missing_all if k not in set(allowed_missing)]
    mismatched = [(k, tuple(v.shape), tuple(model_sd[k].shape)) for k, v in sd.items()
                  if k in model_sd and tuple(v.shape) != tuple(model_sd[k].shape)]

    found = len(model_sd) - len(missing_all) - len(mismatched)
    if model_sd and found < WRONG_MODEL_FRACTION * len(model_sd) and (missing or mismatched):
        from ldm.checkpoint.families import describe_family

        raise CheckpointError(
            f"{source} is for a different model: only {found} of the {len(model_sd)} keys of "
            f"{type(model).__name__} are in it with the right shape; the file looks like "
            f"{describe_family(sd if not prefix else dict(extract_state_dict(state_dict)))}"
        )
    if strict and (missing or unexpected or mismatched):
        raise StateDictMismatchError(_mismatch_message(source, missing, unexpected, mismatched),
                                     missing, unexpected, mismatched)
    if missing or unexpected or mismatched:
        logger.warning("%s (strict: false): %s", source, _mismatch_message(source, missing, unexpected, mismatched))
    for key, _, _ in mismatched:
        del sd[key]
    for key in unexpected:
        del sd[key]
    if allowed_missing:
        logger.info("%s: left at their initial values: %s", source, describe_keys(allowed_missing))

    if assign is None:
        assign = _needs_assign(model)
    model.load_state_dict(sd, strict=False, assign=assign)
    report.loaded = len(sd)
    report.missing = missing + allowed_missing
    report.unexpected = unexpected
    report.mismatched = mismatched
    return report
