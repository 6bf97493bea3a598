"""`save_checkpoint`: atomic writes of torch and safetensors checkpoints.

The file is written next to its destination under a temporary name and moved into place
with `os.replace`, so an interrupted save never leaves a truncated checkpoint behind. Saving
writes CLIP text-encoder keys in the released `transformer.text_model.*` layout.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import torch

from ldm.checkpoint.keymaps import to_released_layout

# Scalar checkpoint entries kept in safetensors metadata (as strings).
METADATA_COUNTERS = ("global_step", "epoch")


def _config_to_json(config: Any) -> str:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(config, (DictConfig, ListConfig)):
            config = OmegaConf.to_container(config, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return json.dumps(config)


def atomic_write(path: str, write) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def safetensors_payload(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors with no shared storage (safetensors refuses aliases such as the
    duplicated first stage of `inpainting_big`)."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        tensor = value.detach()
        ident = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes()) if tensor.numel() else None
        if ident is not None and ident in seen or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()
        elif ident is not None:
            seen.add(ident)
        out[key] = tensor.cpu()
    return out


def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike, config: Any = None,
                    metadata: Mapping[str, str] | None = None) -> None:
    """Write `obj` (a checkpoint dict with `"state_dict"`, or a plain state dict) atomically.

    Args:
        obj: what to save. For `.safetensors` only the tensors of the state dict are written,
            with `global_step`/`epoch` and the config in the metadata.
        path: destination; `.safetensors` selects that format, anything else `torch.save`.
        config: model/training config (dict or OmegaConf) to embed; defaults to
            `obj["config"]` when present. For torch files it is stored under `"config"`.
        metadata: extra string metadata for safetensors.
    """
    path = os.fspath(path)
    is_wrapped = isinstance(obj.get("state_dict"), Mapping)
    state_dict = to_released_layout(obj["state_dict"] if is_wrapped else obj)
    config = config if config is not None else (obj.get("config") if is_wrapped else None)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        meta = {"format": "pt"}
        if is_wrapped:
            meta.update({k: str(int(obj[k])) for k in METADATA_COUNTERS if isinstance(obj.get(k), int)})
            meta.update({str(k): str(v) for k, v in (obj.get("metadata") or {}).items()})
        if config is not None:
            meta["config"] = _config_to_json(config)
        meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
        payload = safetensors_payload(state_dict)
        atomic_write(path, lambda tmp: save_file(payload, tmp, metadata=meta))
        return
    out = dict(obj) if is_wrapped else {}
    out["state_dict"] = state_dict
    if config is not None:
        out["config"] = json.loads(_config_to_json(config))
    atomic_write(path, lambda tmp: torch.save(out, tmp))
