"""Precomputed first-stage latents (and frozen condition embeddings) on disk: writer and data set.

`scripts/cache_latents.py` encodes a data set once with a model's frozen first stage (and its
frozen condition encoder) and writes it with `CachedLatentsWriter`; `CachedLatents` reads it
back, so that training a `LatentDiffusion` does not run the autoencoder at every step.

Format (a folder):

    index.json
        {"format": "ldm-cached-latents", "version": 1, "num_samples": N,
         "latent": {"key": "latent", "kind": "moments" | "latent", "shape": [C, h, w], "dtype": "float16"},
         "cond": {"key": "cond_embedding", "source_key": "txt", "shape": [77, 768], "dtype": "float16"} or null,
         "fields": {"caption": "str", "class_label": "tensor", ...},
         "shards": [{"file": "shard-000000.safetensors", "num_samples": 1024}, ...],
         "provenance": {...free-form: configs, checkpoint, split...}}
    shard-000000.safetensors, ...
        tensors: the latent key [n, ...], the cond key [n, ...] if any, one [n, ...] tensor per
        tensor field; string fields are in the safetensors metadata entry "strings", a JSON
        object {field: [n strings]}.

`kind: moments` stores the Gaussian posterior's mean and log-variance concatenated on the
channel axis ([2C, h, w]; `LatentDiffusion` draws a fresh sample each step, exactly as when
encoding images); `kind: latent` stores a deterministic latent (VQ before quantization,
identity first stages). Samples are dicts with the latent under `latent_key`, the embedding
under `cond_key` and every field under its own name.
"""
from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

FORMAT = "ldm-cached-latents"
VERSION = 1
LATENT_KINDS = ("moments", "latent")
MAX_OPEN_SHARDS = 64  # shard readers a CachedLatents keeps open (each holds a file descriptor)
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class CachedLatentsError(ValueError):
    """A cache folder that is missing, incomplete or of another format (one-line message)."""


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


class CachedLatentsWriter:
    """Writes samples into shards of `shard_size` and the index on `close()`.

    Args:
        root: output folder (created; an existing index there is an error unless `overwrite`).
        latent_kind: "moments" or "latent" (see the module doc).
        shard_size: samples per shard file.
        dtype: storage dtype of the latent and the embedding ("float16", "bfloat16", "float32").
        latent_key: tensor name of the latents (the batch key `LatentDiffusion.cached_latent_key`).
        cond_key: tensor name of the condition embeddings (`LatentDiffusion.cached_cond_key`).
        cond_source_key: the batch key the embeddings were computed from (documentation).
        provenance: free-form JSON-able record of how the cache was made.
        overwrite: replace an existing cache in `root`.
    """

    def __init__(self, root: str | os.PathLike, latent_kind: str, shard_size: int = 1024, dtype: str = "float16",
                 latent_key: str = "latent", cond_key: str = "cond_embedding", cond_source_key: str | None = None,
                 provenance: Mapping[str, Any] | None = None, overwrite: bool = False):
        if latent_kind not in LATENT_KINDS:
            raise ValueError(f"latent_kind must be one of {LATENT_KINDS}, got {latent_kind!r}")
        if shard_size < 1:
            raise ValueError("shard_size must be positive")
        self.root = Path(root)
        if (self.root / "index.json").exists() and not overwrite:
            raise CachedLatentsError(f"{self.root} already holds a cache (index.json); choose another folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self.latent_kind, self.shard_size, self.dtype_name = latent_kind, shard_size, dtype
        self.dtype = _dtype(dtype)
        self.latent_key, self.cond_key, self.cond_source_key = latent_key, cond_key, cond_source_key
        self.provenance = dict(provenance or {})
        self.shards: list[dict[str, Any]] = []
        self.fields: dict[str, str] = {}
        self.latent_shape: list[int] | None = None
        self.cond_shape: list[int] | None = None
        self._pending: list[dict[str, Any]] = []
        self.num_samples = 0

    def add(self, latents: Tensor, cond: Tensor | None = None, fields: Mapping[str, Any] | None = None) -> None:
        """Queue a batch: latents [B, ...], embeddings [B, ...] or None, per-sample fields
        (tensors [B, ...] or lists of B strings / numbers)."""
        b = latents.shape[0]
        latents = latents.detach().to("cpu", self.dtype)
        if self.latent_shape is None:
            self.latent_shape = list(latents.shape[1:])
        cond = None if cond is None else cond.detach().to("cpu", self.dtype)
        if cond is not None and self.cond_shape is None:
            self.cond_shape = list(cond.shape[1:])
        for i in range(b):
            sample: dict[str, Any] = {self.latent_key: latents[i]}
            if cond is not None:
                sample[self.cond_key] = cond[i]
            for name, value in (fields or {}).items():
                item = value[i]
                if isinstance(item, str):
                    self.fields.setdefault(name, "str")
                else:
                    self.fields.setdefault(name, "tensor")
                    item = torch.as_tensor(item).detach().cpu()
                sample[name] = item
            self._pending.append(sample)
        while len(self._pending) >= self.shard_size:
            self._flush(self._pending[:self.shard_size])
            self._pending = self._pending[self.shard_size:]

    def _flush(self, samples: Sequence[dict[str, Any]]) -> None:
        if not samples:
            return
        name = f"shard-{len(self.shards):06d}.safetensors"
        tensors: dict[str, Tensor] = {}
        strings: dict[str, list[str]] = {}
        for key in samples[0]:
            if self.fields.get(key) == "str":
                strings[key] = [s[key] for s in samples]
            else:
                tensors[key] = torch.stack([s[key] for s in samples]).contiguous()
        tmp = self.root / (name + ".tmp")
        save_file(tensors, str(tmp), metadata={"strings": json.dumps(strings)})
        os.replace(tmp, self.root / name)
        self.shards.append({"file": name, "num_samples": len(samples)})
        self.num_samples += len(samples)

    def close(self) -> Path:
        """Write the remaining samples and the index; returns the index path."""
        self._flush(self._pending)
        self._pending = []
        if self.latent_shape is None:
            raise CachedLatentsError("no samples were written")
        index = {
            "format": FORMAT, "version": VERSION, "num_samples": self.num_samples,
            "latent": {"key": self.latent_key, "kind": self.latent_kind, "shape": self.latent_shape,
                       "dtype": self.dtype_name},
            "cond": None if self.cond_shape is None else {
                "key": self.cond_key, "source_key": self.cond_source_key, "shape": self.cond_shape,
                "dtype": self.dtype_name},
            "fields": self.fields, "shards": self.shards, "provenance": self.provenance,
        }
        path = self.root / "index.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(index, indent=1))
        os.replace(tmp, path)
        logger.info("wrote %d cached samples in %d shards to %s", self.num_samples, len(self.shards), self.root)
        return path


def read_index(root: str | os.PathLike) -> dict[str, Any]:
    """The parsed and checked `index.json` of a cache folder."""
    path = Path(root) / "index.json"
    if not path.is_file():
        raise CachedLatentsError(f"{root}: no index.json (make the cache with scripts/cache_latents.py)")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        raise CachedLatentsError(f"{path}: not an {FORMAT} index")
    if index.get("version") != VERSION:
        raise CachedLatentsError(f"{path}: format version {index.get('version')} is not supported ({VERSION})")
    for shard in index["shards"]:
        if not (Path(root) / shard["file"]).is_file():
            raise CachedLatentsError(f"{root}: shard {shard['file']} listed in index.json is missing")
    return index


class CachedLatents(Dataset):
    """Map-style data set over a cache folder written by `CachedLatentsWriter`.

    Args:
        root: the cache folder.
        latent_key: sample key of the latents (match `LatentDiffusion.cached_latent_key`).
        cond_key: sample key of the embeddings (match `LatentDiffusion.cached_cond_key`).
        fields: the fields to return (default: all that were stored).
        dtype: dtype of the returned latents and embeddings.
    """

    def __init__(self, root: str | os.PathLike, latent_key: str = "latent", cond_key: str = "cond_embedding",
                 fields: Sequence[str] | None = None, dtype: str = "float32"):
        self.root = Path(root)
        self.index = read_index(self.root)
        self.latent_key, self.cond_key = latent_key, cond_key
        self.dtype = _dtype(dtype)
        stored = self.index["fields"]
        unknown = [f for f in (fields or []) if f not in stored]
        if unknown:
            raise CachedLatentsError(f"{root}: fields {unknown} were not cached (cached: {sorted(stored)})")
        self.fields = list(stored) if fields is None else list(fields)
        self._starts: list[int] = []
        total = 0
        for shard in self.index["shards"]:
            self._starts.append(total)
            total += int(shard["num_samples"])
        self._len = total
        self._strings: dict[int, dict[str, list[str]]] = {}
        # shard -> (safe_open handle, its tensor names), the most recently used last
        self._open: OrderedDict[int, tuple[Any, frozenset[str]]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        # handles are per process: a DataLoader worker opens its own
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state

    def __len__(self) -> int:
        return self._len

    def _locate(self, i: int) -> tuple[int, int]:
        if not -self._len <= i < self._len:
            raise IndexError(f"index {i} out of range for {self._len} cached samples")
        i %= self._len
        lo, hi = 0, len(self._starts) - 1
        while lo < hi:  # last shard whose start <= i
            mid = (lo + hi + 1) // 2
            if self._starts[mid] <= i:
                lo = mid
            else:
                hi = mid - 1
        return lo, i - self._starts[lo]

    def _reader(self, shard: int) -> tuple[Any, frozenset[str]]:
        """The open (memory-mapped) reader of a shard and its tensor names. Opening a shard
        parses its header, which cost most of the time when every sample reopened its file
        (225 -> 31 us a sample); at most `MAX_OPEN_SHARDS` stay open, the least recently used
        is closed first."""
        reader = self._open.pop(shard, None)
        if reader is None:
            handle = safe_open(str(self.root / self.index["shards"][shard]["file"]), framework="pt")
            reader = (handle, frozenset(handle.keys()))
            if len(self._open) >= MAX_OPEN_SHARDS:
                self._open.popitem(last=False)
        self._open[shard] = reader
        return reader

    def __getitem__(self, i: int) -> dict[str, Any]:
        shard, row = self._locate(int(i))
        f, names = self._reader(shard)
        out: dict[str, Any] = {}
        stored_latent, stored_cond = self.index["latent"]["key"], (self.index["cond"] or {}).get("key")
        out[self.latent_key] = f.get_slice(stored_latent)[row].to(self.dtype)
        if stored_cond is not None and stored_cond in names:
            out[self.cond_key] = f.get_slice(stored_cond)[row].to(self.dtype)
        for field in self.fields:
            if self.index["fields"][field] == "tensor":
                out[field] = f.get_slice(field)[row]
        if any(self.index["fields"][k] == "str" for k in self.fields):
            if shard not in self._strings:
                self._strings[shard] = json.loads((f.metadata() or {}).get("strings", "{}"))
            for field in self.fields:
                if self.index["fields"][field] == "str":
                    out[field] = self._strings[shard][field][row]
        return out
