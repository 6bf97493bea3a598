"""Reading pickle-based checkpoints without running code from them.

`torch.load(..., weights_only=True)` only rebuilds tensors and plain containers. Lightning 1.x
checkpoints (all CompVis and Stable Diffusion v1 releases) additionally pickle a few classes
(`pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint` as a dict key of `callbacks`,
numpy scalars for `best_model_score`, sometimes OmegaConf containers in `hyper_parameters`),
which `weights_only` refuses. We never import those classes: each such name is bound to a new,
inert `PicklePlaceholder` subclass that only stores the arguments it is given, and is
allow-listed for this one load through `torch.serialization.safe_globals`. Only names under
`PLACEHOLDER_PREFIXES` get a placeholder; any other global (`os.system`, `builtins.eval`,
`subprocess.Popen`, ...) makes the load fail with `UnsafePickleError` before anything runs.

The names are found without unpickling: statically from `data.pkl` for zip-format files
(`torch.serialization.get_unsafe_globals_in_checkpoint`), and for legacy (pre-zip) files from
the refusal message of the restricted unpickler, retried with the name added.
"""
from __future__ import annotations

import pickletools
import re
import warnings
from collections.abc import Iterable
from typing import Any

import torch

from ldm.checkpoint.errors import UnsafePickleError

# Modules whose classes legitimate training checkpoints pickle; they become placeholders.
PLACEHOLDER_PREFIXES: tuple[str, ...] = (
    "pytorch_lightning.",
    "lightning.",
    "lightning_fabric.",
    "omegaconf.",
    "numpy.",
    "argparse.Namespace",
    "pathlib.",
    "collections.",
    "typing.",
    "enum.",
    "ldm.",
    "main.",
    "torch.optim.",
    "torch.utils.data.",
)
# Single names that are harmless as inert stand-ins (protocol-2 helpers, builtin containers).
PLACEHOLDER_NAMES: frozenset[str] = frozenset({
    "_codecs.encode",
    "copyreg._reconstructor",
    "copy_reg._reconstructor",
    "builtins.object",
    "builtins.frozenset",
    "builtins.slice",
    "builtins.range",
    "__builtin__.set",
    "__builtin__.frozenset",
    "__builtin__.object",
})

_REFUSED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")
_MAX_LEGACY_ROUNDS = 64


class PicklePlaceholder:
    """Inert stand-in for a class or function named in a checkpoint's pickle.

    It records what the pickle passes to it (`args`, `kwargs`, `state`) and does nothing else.
    """

    pickled_name = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder for {self.pickled_name}>"


def may_be_placeholder(name: str) -> bool:
    """True when `name` (``module.qualname``) may be replaced by an inert placeholder."""
    return name in PLACEHOLDER_NAMES or name.startswith(PLACEHOLDER_PREFIXES)


def make_placeholder(name: str) -> type:
    """A new `PicklePlaceholder` subclass standing for the pickled global `name`."""
    short = name.rsplit(".", 1)[-1] or "Global"
    return type(short, (PicklePlaceholder,), {"pickled_name": name, "__module__": __name__})


def _refuse(path: str, names: Iterable[str]) -> UnsafePickleError:
    names = sorted(set(names))
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return UnsafePickleError(
        f"{path}: refusing to unpickle: it references {shown}, which is not a tensor or plain "
        "container and could run code when loaded; only if you trust this file, load it with "
        "--unsafe-pickle (unsafe_pickle=True) and convert it once to .safetensors "
        "(scripts/convert_checkpoint.py)",
        names,
    )


def _load_with(path: str, placeholders: dict[str, type], mmap: bool) -> Any:
    allowed = [(cls, name) for name, cls in placeholders.items()]
    with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _scan_pickle_globals(path: str, max_pickles: int = 5) -> set[str]:
    """Globals named by the leading pickles of a legacy torch file (or a bare pickle).

    A legacy torch file is a sequence of pickles (magic number, protocol, system info, the
    object) followed by raw storage bytes; each is disassembled without being executed.
    """
    found: set[str] = set()
    with open(path, "rb") as f:
        for _ in range(max_pickles):
            strings: list[str] = []
            try:
                for opcode, arg, _pos in pickletools.genops(f):
                    if opcode.name == "GLOBAL":
                        found.add(str(arg).replace(" ", "."))
                    elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.add(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
            except Exception:  # noqa: BLE001 - end of the pickles: raw storage bytes or end of file
                break
    return found


def _torch_allowed(name: str) -> bool:
    from torch import _weights_only_unpickler as wou

    return name in wou._get_allowed_globals()


def safe_torch_load(path: str, is_zip: bool) -> tuple[Any, list[str]]:
    """Load a torch pickle file with the restricted unpickler.

    Returns the object and the names that were replaced by placeholders. Raises
    `UnsafePickleError` if the file names anything outside the placeholder allow-list.
    """
    placeholders: dict[str, type] = {}
    if is_zip:
        unknown = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        refused = [n for n in unknown if not may_be_placeholder(n)]
        if refused:
            raise _refuse(path, refused)
        placeholders = {n: make_placeholder(n) for n in unknown}
        return _load_with(path, placeholders, mmap=True), sorted(placeholders)
    unknown = {n for n in _scan_pickle_globals(path) if not _torch_allowed(n)}
    refused = [n for n in unknown if not may_be_placeholder(n)]
    if refused:
        raise _refuse(path, refused)
    placeholders = {n: make_placeholder(n) for n in unknown}
    for _ in range(_MAX_LEGACY_ROUNDS):
        try:
            return _load_with(path, placeholders, mmap=False), sorted(placeholders)
        except Exception as err:  # pickle.UnpicklingError or RuntimeError wrapping it
            match = _REFUSED_GLOBAL.search(str(err))
            if match is None:
                raise
            name = match.group(1)
            if not may_be_placeholder(name) or name in placeholders:
                raise _refuse(path, [name]) from None
            placeholders[name] = make_placeholder(name)
    raise _refuse(path, list(placeholders))
