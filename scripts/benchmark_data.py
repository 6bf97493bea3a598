"""Data-loading throughput: images/s for decode + augment at 256x256 with 0, 1 and 2 workers.

Writes a temporary set of photo-like JPEGs (rendered scenes, upscaled, with sensor-like noise;
by default 512x384) once as an image folder and once as webdataset tar shards, then times a full
pass of `ldm.data.folder.ImageFolder` and `ldm.data.webdataset.WebDataset` (resize of the
shorter side to 256, random 256x256 crop, random flip, conversion to float) through a torch
DataLoader. The first batch (worker start-up) is timed separately from the steady state; the
main process's CPU time per image (all of the work at 0 workers) is a load-independent figure.
Also reports the built-in scenes data set (rendering, all keys) in the main process.

    python scripts/benchmark_data.py [--images 512] [--workers 0 1 2] [--size 256]
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ldm.data.folder import ImageFolder  # noqa: E402
from ldm.data.scenes import Scenes  # noqa: E402
from ldm.data.webdataset import WebDataset  # noqa: E402


def make_images(n: int, width: int, height: int, seed: int = 0) -> list[bytes]:
    """JPEG bytes of n photo-like test images: rendered scenes, upscaled, with sensor-like noise."""
    scenes = Scenes(size=128, num_samples=n, seed=seed, keys=["image"])
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        small = Image.fromarray(((scenes[i]["image"] + 1) * 127.5).astype(np.uint8))
        img = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
        img = img + rng.normal(0, 6, img.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def write_data(root: Path, images: list[bytes], per_shard: int) -> list[str]:
    """The images as a folder (root/folder) and as shards (root/shards); returns the shard paths."""
    (root / "folder").mkdir(parents=True)
    (root / "shards").mkdir()
    for i, data in enumerate(images):
        (root / "folder" / f"{i:06d}.jpg").write_bytes(data)
    shards = []
    for s in range(0, len(images), per_shard):
        path = root / "shards" / f"{s // per_shard:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(s, min(s + per_shard, len(images))):
                for ext, payload in (("jpg", images[i]), ("txt", f"image {i}".encode())):
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        shards.append(str(path))
    return shards


def time_loader(dataset, workers: int, batch_size: int) -> tuple[float, float, float, int]:
    """(first-batch s, steady-state images/s, main-process CPU ms per image, images seen) of one pass."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                        shuffle=not isinstance(dataset, torch.utils.data.IterableDataset))
    start = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t_first = time.perf_counter() - start
    seen, start, cpu = 0, time.perf_counter(), time.process_time()
    for batch in it:
        seen += len(batch["image"])
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return t_first, seen / max(elapsed, 1e-9), 1000 * cpu / max(seen, 1), seen + len(first["image"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="number of images")
    parser.add_argument("--source", type=str, default="512x384", help="source image size WxH")
    parser.add_argument("--size", type=int, default=256, help="output crop size")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-shard", type=int, default=64, help="images per tar shard")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    width, height = (int(v) for v in args.source.split("x"))
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}; {args.images} JPEGs of "
          f"{width}x{height} -> {args.size}x{args.size} (resize shorter side, random crop, flip)")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        shards = write_data(Path(tmp), make_images(args.images, width, height), args.per_shard)
        print(f"wrote folder + {len(shards)} shards in {time.perf_counter() - t0:.1f} s\n")
        print(f"{'loader':<14}{'workers':>8}{'first batch s':>15}{'images/s':>11}{'main CPU ms/img':>17}")
        for name in ("folder", "webdataset"):
            for workers in args.workers:
                if name == "folder":
                    ds = ImageFolder(str(Path(tmp) / "folder"), size=args.size, random_crop=True, flip_p=0.5)
                else:
                    ds = WebDataset(shards, size=args.size, random_crop=True, flip_p=0.5, rank=0, world_size=1)
                t_first, rate, cpu_ms, seen = time_loader(ds, workers, args.batch_size)
                assert seen == args.images, f"{name} saw {seen} of {args.images} images"
                print(f"{name:<14}{workers:>8}{t_first:>15.2f}{rate:>11.1f}{cpu_ms:>17.2f}")
    print()
    for size in (64, args.size):
        ds = Scenes(size=size, num_samples=200)
        start = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        rate = len(ds) / (time.perf_counter() - start)
        print(f"scenes (built-in) {size}x{size}, all keys, main process: {rate:.0f} samples/s")


if __name__ == "__main__":
    main()
