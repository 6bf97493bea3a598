"""Builders of small data folders and shards in the real on-disk layouts, for the data tests."""
from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

SYNSETS = ("n01440764", "n01443537", "n01484850")
HUMAN = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
         "n01484850": "great white shark"}


def image_array(size: tuple[int, int] = (48, 40), seed: int = 0) -> np.ndarray:
    """A (h, w, 3) uint8 test picture: a smooth gradient plus noise, different per seed."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1), np.full((h, w), 128.0)], -1)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def write_image(path: Path, size: tuple[int, int] = (48, 40), seed: int = 0, **save: object) -> Path:
    """Save a test picture; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_array(size, seed)).save(path, **save)
    return path


def write_corrupt(path: Path) -> Path:
    """A truncated JPEG: the header is fine, the data stops early."""
    buf = io.BytesIO()
    Image.fromarray(image_array((64, 64), 7)).save(buf, format="JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    return path


def make_faces(root: Path, name: str, n_train: int = 3, n_val: int = 2, npy: bool = False,
               size: tuple[int, int] = (48, 48)) -> None:
    """taming's faces layout: data/<name>/ files + data/<name>{train,validation}.txt."""
    folder = root / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n_train + n_val):
        if npy:
            arr = image_array(size, i).transpose(2, 0, 1)[None]  # (1, 3, H, W) as taming writes
            np.save(folder / f"imgHQ{i:05d}.npy", arr)
            names.append(f"imgHQ{i:05d}.npy")
        else:
            write_image(folder / f"{i:05d}.png", size, i)
            names.append(f"{i:05d}.png")
    (root / "data" / f"{name}train.txt").write_text("\n".join(names[:n_train]) + "\n")
    (root / "data" / f"{name}validation.txt").write_text("\n".join(names[n_train:]) + "\n")


def make_lsun(root: Path, folder: str, prefix: str, n: int = 3) -> None:
    """The original's LSUN layout: data/lsun/<folder>/ + data/lsun/<prefix>_{train,val}.txt."""
    base = root / "data" / "lsun"
    names = [f"img{i}.webp" for i in range(n)]
    for i, name in enumerate(names):
        write_image(base / folder / name, (60, 40), i, lossless=True)
    (base / f"{prefix}_train.txt").write_text("\n".join(names[:-1]) + "\n")
    (base / f"{prefix}_val.txt").write_text(names[-1] + "\n")


def make_imagenet(root: Path, per_class: int = 2, flat_val: bool = False, size: tuple[int, int] = (64, 48)) -> None:
    """ILSVRC2012 folders: data/imagenet/{train,val}/<synset>/*.JPEG (+ synset_human.txt)."""
    base = root / "data" / "imagenet"
    k = 0
    for split in ("train", "val"):
        for synset in SYNSETS:
            for j in range(per_class):
                k += 1
                if split == "val" and flat_val:
                    write_image(base / "val" / f"ILSVRC2012_val_{k:08d}.JPEG", size, k, format="JPEG")
                else:
                    write_image(base / split / synset / f"{synset}_{j}.JPEG", size, k, format="JPEG")
    if flat_val:
        lines = []
        k = len(SYNSETS) * per_class
        for synset in SYNSETS:
            for _ in range(per_class):
                k += 1
                lines.append(f"ILSVRC2012_val_{k:08d}.JPEG {synset}")
        (base / "validation_synset.txt").write_text("\n".join(lines) + "\n")
    (base / "synset_human.txt").write_text("".join(f"{s} {h}\n" for s, h in HUMAN.items()))


OI_CLASSES = [("/m/01", "Cat"), ("/m/02", "Dog"), ("/m/03", "Tree")]


def make_openimages(root: Path, n: int = 3) -> None:
    """OpenImages: data/openimages/{train,validation}/<id>.jpg + the box and class CSVs."""
    base = root / "data" / "openimages"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "class-descriptions-boxable.csv", "w", newline="") as f:
        csv.writer(f).writerows(OI_CLASSES)
    header = ["ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax",
              "IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside"]
    for split, csv_name in (("train", "oidv6-train-annotations-bbox.csv"),
                            ("validation", "validation-annotations-bbox.csv")):
        rows = []
        for i in range(n):
            image_id = f"{split[:2]}{i:04d}"
            write_image(base / split / f"{image_id}.jpg", (80, 60), i, format="JPEG")
            rows.append([image_id, "xclick", "/m/01", 1, 0.1, 0.4, 0.2, 0.6, 0, 0, 1, 0, 0])
            rows.append([image_id, "xclick", "/m/03", 1, 0.5, 0.9, 0.1, 0.9, 1, 0, 0, 0, 0])
        with open(base / csv_name, "w", newline="") as f:
            csv.writer(f).writerows([header] + rows)


def make_coco(root: Path, n: int = 3) -> None:
    """COCO: data/coco/{train,val}2017/*.jpg + annotations/instances_*.json, captions_*.json."""
    base = root / "data" / "coco"
    cats = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]
    for split in ("train2017", "val2017"):
        images, anns, caps = [], [], []
        for i in range(n):
            name = f"{i:012d}.jpg"
            write_image(base / split / name, (80, 60), i, format="JPEG")
            images.append({"id": i, "file_name": name, "width": 80, "height": 60})
            anns.append({"id": 2 * i, "image_id": i, "category_id": 1, "bbox": [8, 6, 24, 30], "iscrowd": 0})
            anns.append({"id": 2 * i + 1, "image_id": i, "category_id": 18, "bbox": [40, 20, 30, 30], "iscrowd": 1})
            caps += [{"id": 10 * i + k, "image_id": i, "caption": f"caption {k} of image {i}"} for k in range(2)]
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
        (base / "annotations" / f"captions_{split}.json").write_text(
            json.dumps({"images": images, "annotations": caps}))


def write_shards(folder: Path, n_shards: int, per_shard: int, size: tuple[int, int] = (40, 36),
                 corrupt_key: str | None = None, json_meta: bool = True) -> list[str]:
    """LAION-style shards: KEY.jpg + KEY.txt + KEY.json per sample; returns the shard paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(n_shards):
        path = folder / f"{s:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for j in range(per_shard):
                key = f"{s:05d}{j:04d}"
                buf = io.BytesIO()
                Image.fromarray(image_array(size, s * 1000 + j)).save(buf, format="JPEG")
                data = b"not a jpeg" if key == corrupt_key else buf.getvalue()
                meta = {"caption": f"json caption {key}", "width": size[0], "height": size[1], "pwatermark": 0.1}
                members = [("jpg", data), ("txt", f"caption {key}".encode())]
                if json_meta:
                    members.append(("json", json.dumps(meta).encode()))
                for ext, payload in members:
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        paths.append(str(path))
    return paths


def make_places(root: Path, n: int = 2) -> None:
    """Places365-Standard: data/places365/{data_256,val_256} + the two list files."""
    base = root / "data" / "places365"
    train, val = [], []
    for i in range(n):
        write_image(base / "data_256" / "a" / "airfield" / f"{i:08d}.jpg", (64, 64), i, format="JPEG")
        train.append(f"/a/airfield/{i:08d}.jpg 0")
        write_image(base / "val_256" / f"Places365_val_{i + 1:08d}.jpg", (64, 64), 10 + i, format="JPEG")
        val.append(f"Places365_val_{i + 1:08d}.jpg 0")
    (base / "places365_train_standard.txt").write_text("\n".join(train) + "\n")
    (base / "places365_val.txt").write_text("\n".join(val) + "\n")
    (base / "categories_places365.txt").write_text("/a/airfield 0\n")


def make_folder_for(target: str, folder: Path) -> None:
    """The layout that a your-own-data loader named `target` reads, created at `folder`."""
    name = target.rsplit(".", 1)[-1]
    if name == "SemanticFolder":
        for sub in ("images", "labels"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image_array((40, 40))).save(folder / "images" / "a.png")
        Image.fromarray(np.zeros((40, 40), np.uint8)).save(folder / "labels" / "a.png")
    elif name == "ClassFolder":
        for cls in ("cats", "dogs"):
            write_image(folder / cls / "0.png", (64, 64))
    else:  # ImageFolder, ImageCaptionFolder
        for i in range(2):
            write_image(folder / f"{i}.png", (64, 64), i)
            (folder / f"{i}.txt").write_text(f"caption {i}")


def make_cocostuff(root: Path) -> None:
    """COCO-Stuff: data/cocostuff/images/{train,val}2017/*.jpg + annotations/{train,val}2017/*.png."""
    base = root / "data" / "cocostuff"
    for split in ("train2017", "val2017"):
        write_image(base / "images" / split / "000000000001.jpg", (64, 48), format="JPEG")
        labels = np.full((48, 64), 255, np.uint8)
        labels[10:30, 5:50] = 181
        (base / "annotations" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels).save(base / "annotations" / split / "000000000001.png")
