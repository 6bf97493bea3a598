"""ImageNet (ILSVRC2012) for class-conditional training, and ImageNet super-resolution pairs.

Layout of `data_root` (defaults `data/imagenet/train`, `data/imagenet/val`):
- synset folders `n01440764/*.JPEG` (train, and val after the usual reorganisation), or
- the original's prepared layout: `filelist.txt` (paths relative to `data/`) plus `data/`, or
- for validation only, a flat folder of `ILSVRC2012_val_*.JPEG` with `validation_synset.txt`
  (`<file> <synset>` per line, the original's) or Kaggle's `LOC_val_solution.csv` beside it.
Human-readable labels come from `synset_human.txt` or `LOC_synset_mapping.txt`
(`n01440764 tench, Tinca tinca`) in `data_root` or its parent; without one, the synset id.

`class_label` is the index of the synset among the sorted synsets present (the original's rule;
with all 1000 classes the standard index), or with `keep_orig_class_label` its index in the
1000-class list. `config` takes the original's dict (`size`, `random_crop`, `sub_indices`,
`keep_orig_class_label`); explicit arguments win over it.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ldm.data.base import ImagePaths, ImageTransform, list_images, missing_data, read_list_file
from ldm.data.superres import SuperresPaths
from ldm.util import ConfigError

LAYOUT = ("synset folders DATA_ROOT/n01440764/*.JPEG, or DATA_ROOT/filelist.txt + DATA_ROOT/data/, "
          "or (validation) flat images with validation_synset.txt beside them")


def str_to_indices(spec: str) -> list[int]:
    """'0-9,20,30-32' -> [0, ..., 9, 20, 30, 31, 32] (the original's sub_indices syntax)."""
    out: list[int] = []
    for part in str(spec).split(","):
        lo, _, hi = part.strip().partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def _find(root: str, names: Sequence[str]) -> str | None:
    for folder in (root, os.path.dirname(os.path.abspath(root))):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def read_synset_human(root: str) -> dict[str, str]:
    """synset -> human-readable label, from synset_human.txt / LOC_synset_mapping.txt if present."""
    path = _find(root, ("synset_human.txt", "LOC_synset_mapping.txt"))
    if path is None:
        return {}
    pairs = (line.split(maxsplit=1) for line in read_list_file(path))
    return {p[0]: (p[1] if len(p) > 1 else p[0]) for p in pairs}


def _val_synsets(root: str) -> dict[str, str] | None:
    """file name -> synset for a flat validation folder, if a mapping file is there."""
    path = _find(root, ("validation_synset.txt",))
    if path:
        return dict(line.split()[:2] for line in read_list_file(path))
    path = _find(root, ("LOC_val_solution.csv",))
    if path:
        with open(path, newline="") as f:
            return {row["ImageId"] + ".JPEG": row["PredictionString"].split()[0] for row in csv.DictReader(f)}
    return None


def scan_imagenet(name: str, root: str) -> tuple[list[str], list[str]]:
    """Absolute paths and synsets of an ImageNet split folder."""
    if not os.path.isdir(root):
        raise missing_data(name, root, LAYOUT)
    if os.path.isfile(os.path.join(root, "filelist.txt")):
        datadir = os.path.join(root, "data") if os.path.isdir(os.path.join(root, "data")) else root
        rel = read_list_file(os.path.join(root, "filelist.txt"))
        paths = [os.path.join(datadir, r) for r in rel]
    else:
        paths = list_images(root)
        rel = [os.path.relpath(p, root) for p in paths]
    if not paths:
        raise missing_data(name, root, LAYOUT)
    if all(os.sep in r or "/" in r for r in rel):
        return paths, [r.replace(os.sep, "/").split("/")[0] for r in rel]
    mapping = _val_synsets(root)
    if mapping is None:
        raise missing_data(name, root, LAYOUT + " (found flat images but no validation_synset.txt)")
    missing = [r for r in rel if os.path.basename(r) not in mapping]
    if missing:
        raise ConfigError(f"{name}: {len(missing)} images have no synset in the mapping, first: {missing[:3]}")
    return paths, [mapping[os.path.basename(r)] for r in rel]


class ImageNetBase(ImagePaths):
    """One ImageNet split with `class_label`, `human_label`, `synsets`, `relpath`.

    Args:
        config: the original's options dict (size, random_crop, sub_indices, keep_orig_class_label).
        process_images: accepted for the original's signature (images are always decoded).
        data_root: the split's folder (see the module docstring for layouts).
        size: smaller side after resizing, then a square crop (None or 0: native resolution).
        random_crop: random crop (default: True for train, False for validation).
        flip_p: probability of a horizontal flip.
        sub_indices: keep only these class indices ("0-9,20" or a list).
        keep_orig_class_label: label by the 1000-class index instead of among present synsets.
        keys: if given, only these keys are returned.
        key_map: renames of returned keys.
    """

    default_root = "data/imagenet/train"
    default_random_crop = True

    def __init__(self, config: Mapping[str, Any] | None = None, process_images: bool = True,
                 data_root: str | None = None, size: int | None = None, random_crop: bool | None = None,
                 flip_p: float = 0.0, sub_indices: str | Sequence[int] | None = None,
                 keep_orig_class_label: bool | None = None, keys: Sequence[str] | None = None,
                 key_map: Mapping[str, str] | None = None) -> None:
        config = dict(config or {})
        size = size if size is not None else config.get("size")
        random_crop = random_crop if random_crop is not None else config.get("random_crop", self.default_random_crop)
        sub_indices = sub_indices if sub_indices is not None else config.get("sub_indices")
        keep_orig = keep_orig_class_label if keep_orig_class_label is not None else config.get(
            "keep_orig_class_label", False)
        self.data_root = data_root or self.default_root
        paths, synsets = scan_imagenet(type(self).__name__, self.data_root)
        human = read_synset_human(self.data_root)
        all_synsets = sorted(human) if len(human) >= 1000 else sorted(set(synsets))
        present = sorted(set(synsets))
        index = {s: i for i, s in enumerate(all_synsets if keep_orig else present)}
        if sub_indices is not None:
            keep = set(str_to_indices(sub_indices) if isinstance(sub_indices, str) else sub_indices)
            chosen = {s for s in all_synsets if all_synsets.index(s) in keep}
            rows = [(p, s) for p, s in zip(paths, synsets) if s in chosen]
            paths, synsets = [r[0] for r in rows], [r[1] for r in rows]
        rel = [os.path.relpath(p, self.data_root) for p in paths]
        labels = {"relpath": rel, "synsets": synsets, "class_label": [index[s] for s in synsets],
                  "human_label": [human.get(s, s) for s in synsets]}
        transform = ImageTransform(size=size or None, random_crop=bool(random_crop), flip_p=flip_p)
        self.synset2idx = index
        super().__init__(paths, transform, labels=labels, keys=keys, key_map=key_map)


class ImageNetTrain(ImageNetBase):
    """ILSVRC2012 train split (default `data/imagenet/train`, random crops)."""

    default_root, default_random_crop = "data/imagenet/train", True


class ImageNetValidation(ImageNetBase):
    """ILSVRC2012 validation split (default `data/imagenet/val`, centre crops)."""

    default_root, default_random_crop = "data/imagenet/val", False


def _read_indices(path: str, allow_pickle: bool) -> list[int]:
    """Indices from .txt (one a line), .npy, or, with allow_pickle, the original's .p pickle."""
    if path.endswith(".npy"):
        return [int(i) for i in np.load(path, allow_pickle=False)]
    if path.endswith((".p", ".pkl", ".pickle")):
        if not allow_pickle:
            raise ConfigError(f"{path} is a pickle; set allow_pickle: true only for a file you trust, "
                              "or convert it to .npy/.txt")
        import pickle

        with open(path, "rb") as f:
            return [int(i) for i in pickle.load(f)]
    return [int(line) for line in read_list_file(path)]


class ImageNetSR(SuperresPaths):
    """ImageNet super-resolution pairs (the original's ImageNetSR parameters).

    Args:
        size: side of the high-resolution image.
        degradation: `bsrgan`/`bsrgani`, `bsrgan_light`, `pil_nearest`, `bicubic`, `cv_area`, ...
        downscale_f: size / LR size.
        min_crop_f: smallest crop as a fraction of the shorter side.
        max_crop_f: largest crop as a fraction of the shorter side.
        random_crop: random crop position.
        data_root: the ImageNet split's folder.
        indices_file: optional subset (the original's high-resolution indices) as .txt/.npy/.p.
        allow_pickle: permit a pickled `indices_file`.
        keys: if given, only these keys are returned.
        key_map: renames of returned keys.
    """

    base_class: type[ImageNetBase] = ImageNetTrain
    deterministic = False

    def __init__(self, size: int = 256, degradation: str | None = None, downscale_f: int = 4,
                 min_crop_f: float = 0.5, max_crop_f: float = 1.0, random_crop: bool = True,
                 data_root: str | None = None, indices_file: str | None = None, allow_pickle: bool = False,
                 keys: Sequence[str] | None = None, key_map: Mapping[str, str] | None = None) -> None:
        base = self.base_class(data_root=data_root)
        indices = _read_indices(indices_file, allow_pickle) if indices_file else range(len(base))
        labels = {k: [v[i] for i in indices] for k, v in base.labels.items()}
        super().__init__([base.paths[i] for i in indices], size=size, degradation=degradation or "bicubic",
                         downscale_f=downscale_f, min_crop_f=min_crop_f, max_crop_f=max_crop_f,
                         random_crop=random_crop, deterministic=self.deterministic, labels=labels,
                         keys=keys, key_map=key_map)


class ImageNetSRTrain(ImageNetSR):
    """Super-resolution pairs from the ImageNet train split."""

    base_class = ImageNetTrain


class ImageNetSRValidation(ImageNetSR):
    """Super-resolution pairs from the ImageNet validation split (fixed per index)."""

    base_class = ImageNetValidation
    deterministic = True
