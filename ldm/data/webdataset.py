"""Streaming text-image pairs from webdataset-style tar shards (the LAION layout), read with `tarfile`.

A shard is a tar whose members are grouped into samples by their key, the path up to the first
dot of the file name: `000123.jpg`, `000123.txt`, `000123.json` form one sample with fields
`jpg`, `txt`, `json`. Shards are named by a list, a glob, or brace notation
(`data/laion/{00000..00127}.tar`).

Splitting without duplicates: every (rank, worker) pair is one of `world_size * num_workers`
consumers. With at least that many shards, consumer c reads shards c, c + N, c + 2N, ... of the
(per-epoch shuffled, identically on every rank) shard list; with fewer shards every consumer
reads all of them and keeps samples c, c + N, ... . Either way the consumers see disjoint samples
that together cover the data set once per epoch. The rank and world size come from the explicit
arguments, else from torch.distributed when it is initialized, else from the RANK / WORLD_SIZE
environment variables, else a single process.
"""
from __future__ import annotations

import glob
import io
import json
import logging
import os
import re
import tarfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from ldm.data.base import ImageTransform, WarnCounter, load_image, missing_data, select_keys, to_float

logger = logging.getLogger(__name__)

IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp")


def expand_braces(pattern: str) -> list[str]:
    """'a{00..02}b{x,y}' -> ['a00bx', 'a00by', 'a01bx', ...] (zero padding kept)."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.groups()
        width = len(lo) if lo.startswith("0") else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    head, tail = pattern[:m.start()], pattern[m.end():]
    return [s for opt in options for s in expand_braces(head + opt + tail)]


def resolve_shards(shards: str | Sequence[str]) -> list[str]:
    """Shard paths from a list, brace pattern(s), glob(s) or a folder."""
    items = [shards] if isinstance(shards, str) else list(shards)
    out: list[str] = []
    for item in items:
        if os.path.isdir(item):
            out += sorted(glob.glob(os.path.join(item, "*.tar")))
        elif any(c in item for c in "*?["):
            out += sorted(glob.glob(item))
        else:
            out += expand_braces(item)
    return out


def distributed_context(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world size): explicit values, else torch.distributed, else RANK/WORLD_SIZE, else (0, 1)."""
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def iter_tar_samples(path: str, corrupt: WarnCounter | None = None) -> Iterator[dict[str, Any]]:
    """Samples of one shard as `{"__key__": key, "__shard__": path, field: bytes, ...}`, streaming."""
    current: dict[str, Any] | None = None
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                dirname, base = os.path.split(member.name)
                if base.startswith(".") or "." not in base:
                    continue
                stem, field = base.split(".", 1)
                key = os.path.join(dirname, stem)
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key, "__shard__": path}
                current[field.lower()] = tar.extractfile(member).read()
            # tarfile ends quietly when a file stops at a header; a whole tar has end blocks there
            if os.path.getsize(path) - tar.offset < 2 * tarfile.BLOCKSIZE:
                raise tarfile.ReadError("truncated: no end-of-archive blocks")
    except (tarfile.TarError, OSError, EOFError) as err:
        if corrupt is None:
            raise
        corrupt(f"{path} ({type(err).__name__}: {err}); rest of the shard skipped")
        current = None  # the last sample may be incomplete
    if current is not None:
        yield current


class WebDataset(IterableDataset):
    """Image-text pairs streamed from tar shards, split across ranks and workers without duplicates.

    Args:
        shards: shard paths: a list, brace pattern (`{00000..00099}.tar`), glob or folder.
        size: smaller side after resizing, then a square crop (None: native resolution).
        random_crop: random instead of centre crop.
        flip_p: probability of a horizontal flip.
        caption_key: member field holding the caption (`txt`), or a key of the `json` member.
        image_fields: member fields tried, in order, for the image.
        min_size: skip samples whose shorter side (json width/height, else the header) is smaller.
        max_pwatermark: skip samples whose json `pwatermark` is above this (LAION's watermark score).
        shuffle_shards: shuffle the shard order every epoch (same order on every rank).
        shuffle_buffer: size of the shuffle buffer of encoded samples (0: stream order).
        seed: seed of the shard order and the shuffle buffer.
        rank: this process's rank (default: from torch.distributed or RANK).
        world_size: number of processes (default: from torch.distributed or WORLD_SIZE).
        length: number of samples per epoch, if known (for progress bars: `len()`).
        image_key: output key of the image (`jpg` for Stable Diffusion's configs).
        caption_out_key: output key of the caption (`txt` for Stable Diffusion's configs).
        keys: if given, only these keys are returned.
    """

    def __init__(self, shards: str | Sequence[str], size: int | None = 256, random_crop: bool = False,
                 flip_p: float = 0.0, caption_key: str = "txt", image_fields: Sequence[str] = IMAGE_FIELDS,
                 min_size: int = 0, max_pwatermark: float | None = None, shuffle_shards: bool = True,
                 shuffle_buffer: int = 0, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, length: int | None = None, image_key: str = "image",
                 caption_out_key: str = "caption", keys: Sequence[str] | None = None) -> None:
        super().__init__()
        self.shards = resolve_shards(shards)
        missing = [s for s in self.shards if not os.path.isfile(s)]
        if not self.shards or missing:
            where = missing[0] if missing else shards
            raise missing_data(type(self).__name__, str(where),
                               "tar shards holding KEY.jpg/png + KEY.txt (+ KEY.json) per sample"
                               + (f" ({len(missing)} of {len(self.shards)} shards missing)" if missing else ""))
        self.transform = ImageTransform(size=size, random_crop=random_crop, flip_p=flip_p)
        self.caption_key = caption_key
        self.image_fields = tuple(image_fields)
        self.min_size = int(min_size)
        self.max_pwatermark = max_pwatermark
        self.shuffle_shards = shuffle_shards
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.length = length
        self.image_key, self.caption_out_key = image_key, caption_out_key
        self.keys = keys
        self.epoch = 0
        self.corrupt = WarnCounter(f"{type(self).__name__}: skipped unreadable sample")
        self.filtered = 0

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("WebDataset length unknown; pass `length` to give it one")
        return int(self.length)

    def __bool__(self) -> bool:
        return True  # truthiness must not depend on an unknown length

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shard order and shuffle to use."""
        self.epoch = int(epoch)

    def consumer(self) -> tuple[int, int]:
        """(index of this rank-and-worker among all consumers, number of consumers)."""
        rank, world = distributed_context(self.rank, self.world_size)
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * workers + worker, world * workers

    def _raw_samples(self) -> Iterator[dict[str, Any]]:
        """This consumer's share of the raw samples, shard by shard."""
        index, total = self.consumer()
        shards = list(self.shards)
        if self.shuffle_shards:
            np.random.default_rng([self.seed, self.epoch]).shuffle(shards)
        if len(shards) >= total:
            for shard in shards[index::total]:
                yield from iter_tar_samples(shard, self.corrupt)
        else:
            count = 0
            for shard in shards:
                for sample in iter_tar_samples(shard, self.corrupt):
                    if count % total == index:
                        yield sample
                    count += 1

    def _keep(self, data: bytes, meta: dict[str, Any]) -> bool:
        """The watermark filter and the size filter (json width/height, else the image header)."""
        if self.max_pwatermark is not None and float(meta.get("pwatermark") or 0.0) > self.max_pwatermark:
            return False
        if self.min_size:
            w = meta.get("original_width", meta.get("width"))
            h = meta.get("original_height", meta.get("height"))
            if w is None or h is None:
                with Image.open(io.BytesIO(data)) as img:  # reads the header only
                    w, h = img.size
            if min(int(w), int(h)) < self.min_size:
                return False
        return True

    def decode(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any] | None:
        """Raw sample -> output dict, or None if it is filtered out or unreadable."""
        try:
            meta = json.loads(sample["json"]) if "json" in sample else {}
        except (ValueError, UnicodeDecodeError):
            meta = {}
        field = next((f for f in self.image_fields if f in sample), None)
        if field is None:
            self.corrupt(f"{sample['__shard__']}:{sample['__key__']} has no image ({', '.join(self.image_fields)})")
            return None
        try:
            if not self._keep(sample[field], meta):
                self.filtered += 1
                return None
            img = load_image(sample[field], self.transform.draft_size)
        except (OSError, ValueError, SyntaxError) as err:
            self.corrupt(f"{sample['__shard__']}:{sample['__key__']}.{field} ({type(err).__name__}: {err})")
            return None
        if self.caption_key in sample:
            caption = sample[self.caption_key].decode("utf-8", errors="replace")
        else:
            caption = str(meta.get(self.caption_key, ""))
        out = {self.image_key: to_float(self.transform(img, rng, sample["__key__"])),
               self.caption_out_key: " ".join(caption.split()), "__key__": sample["__key__"]}
        return select_keys(out, self.keys, None)

    def _shuffled(self, samples: Iterator[dict[str, Any]], rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        """Raw (still encoded, so small) samples through the shuffle buffer."""
        if self.shuffle_buffer <= 1:
            yield from samples
            return
        buffer: list[dict[str, Any]] = []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(int(rng.integers(len(buffer))))
        while buffer:
            yield buffer.pop(int(rng.integers(len(buffer))))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        index, _ = self.consumer()
        rng = np.random.default_rng([self.seed, self.epoch, index, torch.initial_seed() % 2**32])
        for sample in self._shuffled(self._raw_samples(), rng):
            out = self.decode(sample, rng)
            if out is not None:
                yield out
        self.epoch += 1
