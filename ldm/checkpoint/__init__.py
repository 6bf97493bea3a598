"""Checkpoint I/O: the one module that `main.py`, the scripts and `ckpt_path` use.

    from ldm.checkpoint import load_checkpoint, load_state_dict_into
    ckpt = load_checkpoint("models/ldm/cin256/model.ckpt")          # safe by default
    load_state_dict_into(model, ckpt["state_dict"], ignore_keys=[], use_ema=False)

* `reading`: formats, safe unpickling (`safe_unpickle`), one-line `CheckpointError`s.
* `state_dict`: strict loading with grouped key reports, EMA, CLIP layout, harmless extras.
* `saving`: atomic torch / safetensors writes (config in the safetensors metadata).
* `keymaps`, `families`, `diffusers_keymap`: key rules, model detection, diffusers layout, as data.
"""
from ldm.checkpoint.errors import (
    CheckpointError,
    StateDictMismatchError,
    UnsafePickleError,
)
from ldm.checkpoint.families import describe_family, detect_family, has_ema
from ldm.checkpoint.reading import (
    detect_format,
    extract_state_dict,
    is_training_checkpoint,
    load_checkpoint,
)
from ldm.checkpoint.saving import save_checkpoint
from ldm.checkpoint.state_dict import LoadReport, describe_keys, load_state_dict_into

__all__ = [
    "CheckpointError",
    "LoadReport",
    "StateDictMismatchError",
    "UnsafePickleError",
    "describe_family",
    "describe_keys",
    "detect_family",
    "detect_format",
    "extract_state_dict",
    "has_ema",
    "is_training_checkpoint",
    "load_checkpoint",
    "load_state_dict_into",
    "save_checkpoint",
]
