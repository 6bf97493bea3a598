"""Atomic checkpoint writing for Lightning: a kill at any moment never leaves a truncated file.

`AtomicCheckpointIO` serialises to a temporary file in the target's folder, fsyncs it and
renames it over the target (`os.replace` is atomic on POSIX and Windows), so a reader sees the
old checkpoint or the new one, never a partial write.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save(obj, path)` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO plugin: atomic local writes, and reads through `ldm.checkpoint`.

    Args:
        unsafe_pickle: let resumed files run pickled code (only for files you trust); by
            default they are read with the restricted unpickler of `ldm.checkpoint`.
    """

    def __init__(self, unsafe_pickle: bool = False):
        super().__init__()
        self.unsafe_pickle = unsafe_pickle

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        from ldm.checkpoint import load_checkpoint

        if "://" in str(path) and not str(path).startswith("file://"):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        return load_checkpoint(str(path).removeprefix("file://"), unsafe_pickle=self.unsafe_pickle)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path) and not str(path).startswith("file://"):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_torch_save(checkpoint, str(path).removeprefix("file://"))
