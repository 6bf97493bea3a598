"""`load_checkpoint`: read any released or trained checkpoint file into a plain dict.

Formats: Lightning 1.x / 2.x `.ckpt` files, plain or wrapped state dicts saved with
`torch.save` (`.ckpt`, `.pt`, `.pth`, zip or legacy format), and `.safetensors` (our
conversion script stores the model config and training counters in the metadata). The result
always has a `"state_dict"` entry; safetensors files also give `"metadata"` and, when present,
`"config"` and `"global_step"`.
"""
from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Mapping
from typing import Any

import torch

from ldm.checkpoint.errors import CheckpointError
from ldm.checkpoint.safe_unpickle import safe_torch_load

logger = logging.getLogger(__name__)

SAFETENSORS = "safetensors"
TORCH_ZIP = "torch-zip"
TORCH_LEGACY = "torch-legacy"
DIFFUSERS_FOLDER = "diffusers-folder"

DOWNLOAD_HINT = (
    "download released weights with scripts/download_models.sh (LDMs, Stable Diffusion v1) or "
    "scripts/download_first_stages.sh (autoencoders), or check the path"
)
# safetensors keeps its header below 100 MB; anything claiming more is not a header.
_MAX_SAFETENSORS_HEADER = 100_000_000


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def detect_format(path: str | os.PathLike) -> str:
    """The container format of `path`, from its first bytes (not its extension).

    Returns one of `SAFETENSORS`, `TORCH_ZIP`, `TORCH_LEGACY`, `DIFFUSERS_FOLDER`; raises
    `CheckpointError` for a missing, empty or unrecognised file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "model_index.json")) or os.path.isdir(os.path.join(path, "unet")):
            return DIFFUSERS_FOLDER
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file; {DOWNLOAD_HINT}")
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file; {DOWNLOAD_HINT}")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes): an interrupted download or save; fetch or save it again")
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        return TORCH_ZIP
    if path.endswith(".safetensors"):
        return SAFETENSORS
    if len(head) == 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n <= min(size - 8, _MAX_SAFETENSORS_HEADER) and head[8:9] == b"{":
            return SAFETENSORS
    if head[:1] == b"\x80":  # pickle protocol marker: torch's legacy format or a bare pickle
        return TORCH_LEGACY
    raise CheckpointError(
        f"{path}: not a checkpoint (neither a torch file nor safetensors: starts with {head[:8]!r})"
    )


def read_safetensors(path: str) -> dict[str, Any]:
    """Tensors and metadata of a `.safetensors` file, with one-line errors for bad files."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    except Exception as err:  # noqa: BLE001 - SafetensorError / OSError: one line instead
        raise CheckpointError(
            f"{path}: bad safetensors file ({_first_line(err)}): truncated or not written by safetensors"
        ) from None
    ckpt: dict[str, Any] = {"state_dict": tensors, "metadata": metadata}
    if "config" in metadata:
        try:
            ckpt["config"] = json.loads(metadata["config"])
        except json.JSONDecodeError:
            logger.warning("%s: metadata 'config' is not JSON; ignored", path)
    for key in ("global_step", "epoch"):
        if key in metadata and metadata[key].lstrip("-").isdigit():
            ckpt[key] = int(metadata[key])
    return ckpt


def _check_zip(path: str) -> None:
    """One-line errors for a truncated zip and for a download archive given as a checkpoint."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt file ({_first_line(err)}); download or save it again") from None
    if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        inside = ", ".join(names[:3])
        raise CheckpointError(
            f"{path}: a zip archive ({inside}), not a torch checkpoint; unpack it first (the download scripts do)"
        )


def _read_torch(path: str, fmt: str, unsafe_pickle: bool) -> Any:
    if unsafe_pickle:
        logger.warning(
            "%s: loading with unrestricted pickle (--unsafe-pickle): the file can run any code; "
            "use this only for files you trust, and convert them to .safetensors once", path,
        )
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - any failure becomes one line
            raise CheckpointError(f"{path}: cannot be read ({_first_line(err)})") from None
    if fmt == TORCH_ZIP:
        _check_zip(path)
    try:
        obj, placeholders = safe_torch_load(path, is_zip=fmt == TORCH_ZIP)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - torch's errors come from deep inside: one line
        reason = _first_line(err)
        if "central directory" in reason or "EOF" in reason or isinstance(err, EOFError) or "truncated" in reason:
            raise CheckpointError(
                f"{path}: truncated or corrupt file ({reason}); download or save it again"
            ) from None
        if "data.pkl" in reason:
            raise CheckpointError(
                f"{path}: a zip archive, not a torch checkpoint; unpack it first (the download scripts do)"
            ) from None
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({reason})") from None
    if placeholders:
        logger.debug("%s: pickled globals kept as inert placeholders: %s", path, ", ".join(placeholders))
    return obj


def load_checkpoint(path: str | os.PathLike, unsafe_pickle: bool = False) -> dict[str, Any]:
    """Read a checkpoint file safely; returns a dict with at least `"state_dict"`.

    Args:
        path: a `.ckpt`/`.pt`/`.pth` torch file (Lightning 1.x/2.x checkpoint, plain state
            dict or `{"state_dict": ...}` wrapper) or a `.safetensors` file.
        unsafe_pickle: allow arbitrary pickled objects (runs code from the file; logs a
            warning). Without it, pickles are read with `weights_only=True` plus inert
            placeholders for Lightning classes, and anything else is refused.

    Raises:
        CheckpointError: one-line message for a missing, empty, truncated, unsafe or
            unrecognised file.
    """
    path = os.fspath(path)
    fmt = detect_format(path)
    if fmt == DIFFUSERS_FOLDER:
        raise CheckpointError(
            f"{path}: a diffusers folder; convert it first: "
            f"python scripts/convert_checkpoint.py --from-diffusers {path} OUT.ckpt"
        )
    if fmt == SAFETENSORS:
        return read_safetensors(path)
    obj = _read_torch(path, fmt, unsafe_pickle)
    if isinstance(obj, Mapping):
        if isinstance(obj.get("state_dict"), Mapping):
            return dict(obj)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {"state_dict": dict(obj)}
        if not obj:
            raise CheckpointError(f"{path}: holds an empty dict, not a state dict")
        keys = ", ".join(list(map(str, obj))[:5])
        raise CheckpointError(f"{path}: a dict without 'state_dict' and with non-tensor entries ({keys})")
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict or a Lightning checkpoint")


def extract_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint (or the mapping itself if it is one)."""
    inner = checkpoint.get("state_dict") if isinstance(checkpoint, Mapping) else None
    if isinstance(inner, Mapping):
        return dict(inner)
    return dict(checkpoint)


def is_training_checkpoint(checkpoint: Mapping[str, Any]) -> bool:
    """True when the file holds a full training state that `-r` can resume from.

    Released files keep only weights (and counters): `optimizer_states` is absent or empty;
    such files belong to `--finetune_from`.
    """
    return bool(checkpoint.get("optimizer_states"))
