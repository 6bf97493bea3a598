"""The one exception type of checkpoint I/O.

Every problem with a checkpoint file (missing, empty, truncated, unsafe, for another model,
keys that do not fit) raises `CheckpointError` with a one-line message that names the file
and says what to do; `main.py` and the scripts print that line instead of a traceback.
"""
from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or does not fit the model: the message is one line."""


class UnsafePickleError(CheckpointError):
    """A pickle file references code outside tensors and plain containers.

    `globals_found` lists the offending `module.name` strings.
    """

    def __init__(self, message: str, globals_found: list[str] | None = None):
        super().__init__(message)
        self.globals_found = list(globals_found or [])


class StateDictMismatchError(CheckpointError):
    """Keys of a checkpoint and a model do not match.

    The message groups the keys by prefix on one line; the full lists are attributes.
    """

    def __init__(self, message: str, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, tuple, tuple]]):
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched
