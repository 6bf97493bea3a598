"""Your own data: image folders, captioned folders, caption lists (CSV / JSONL), class subfolders.

- `ImageFolder`: every image under `data_root` (recursive; png, jpg, jpeg, webp, bmp, tif, gif).
- `ImageCaptionFolder`: the same, each image with a `.txt` of the same name holding its caption.
- `ImageCaptionList`: a CSV (header with `path` and `caption` columns) or JSONL file
  (`{"path": ..., "caption": ...}` per line); relative paths are relative to `data_root`
  (default: the list file's folder). Missing files fail at start-up, naming the first ones.
- `ClassFolder`: `data_root/<class name>/**/image`; `class_label` is the index of the class
  folder in sorted order, `human_label` its name.

All return `image` (HWC float32 in [-1, 1]) plus `file_path_` and their task keys, and take the
same transform arguments: `size` (smaller side), `crop_size`, `random_crop`, `flip_p`,
`interpolation`, and `keys` / `key_map` (e.g. `{"image": "jpg", "caption": "txt"}` for the
Stable Diffusion configs).
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence

from ldm.data.base import (IMAGE_EXTENSIONS, ImagePaths, ImageTransform, MissingDataError, check_files_exist,
                           list_images, missing_data, require_dir)
from ldm.util import ConfigError


def _transform(size: int | None, crop_size: int | None, random_crop: bool, flip_p: float,
               interpolation: str) -> ImageTransform:
    return ImageTransform(size=size, crop_size=crop_size, random_crop=random_crop, flip_p=flip_p,
                          interpolation=interpolation)


class ImageFolder(ImagePaths):
    """All images under a folder, recursively.

    Args:
        data_root: the folder.
        size: smaller side after resizing (None: native resolution).
        crop_size: side of the square crop (default `size`; None with size None: no crop).
        random_crop: random instead of centre crop.
        flip_p: probability of a horizontal flip.
        interpolation: resize filter (bicubic, bilinear, lanczos, area, nearest).
        recursive: descend into subfolders.
        extensions: file name endings that count as images.
        keys: if given, only these keys are returned.
        key_map: renames of returned keys.
    """

    layout = "an image folder: DATA_ROOT/**/*.{png,jpg,jpeg,webp}"

    def __init__(self, data_root: str = "data/images", size: int | None = 256, crop_size: int | None = None,
                 random_crop: bool = False, flip_p: float = 0.0, interpolation: str = "bicubic",
                 recursive: bool = True, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 keys: Sequence[str] | None = None, key_map: Mapping[str, str] | None = None) -> None:
        require_dir(type(self).__name__, data_root, self.layout)
        paths = list_images(data_root, recursive, extensions)
        if not paths:
            raise missing_data(type(self).__name__, data_root, self.layout)
        self.data_root = str(data_root)
        super().__init__(paths, _transform(size, crop_size, random_crop, flip_p, interpolation),
                         labels=self._labels(paths), keys=keys, key_map=key_map)

    def _labels(self, paths: list[str]) -> dict[str, list]:
        rel = [os.path.relpath(p, self.data_root) for p in paths]
        return {"relative_file_path_": rel}


class ImageCaptionFolder(ImageFolder):
    """Images with same-name `.txt` captions (`cat.jpg` + `cat.txt`); see `ImageFolder` for the args.

    Args:
        require_captions: fail at start when an image has no `.txt` (else its caption is "").
    """

    layout = "DATA_ROOT/**/NAME.{png,jpg,...} each with DATA_ROOT/**/NAME.txt holding its caption"

    def __init__(self, data_root: str = "data/captioned_images", require_captions: bool = True,
                 **kwargs) -> None:
        self.require_captions = require_captions
        super().__init__(data_root=data_root, **kwargs)

    def _labels(self, paths: list[str]) -> dict[str, list]:
        labels = super()._labels(paths)
        txts = [os.path.splitext(p)[0] + ".txt" for p in paths]
        if self.require_captions:
            try:
                check_files_exist(txts, f"{type(self).__name__}: the images of '{self.data_root}'")
            except MissingDataError as err:
                raise MissingDataError(f"{err} (captions are NAME.txt next to NAME.jpg; "
                                       f"require_captions: false allows images without one)") from None
        captions = []
        for t in txts:
            if os.path.isfile(t):
                with open(t, encoding="utf-8") as f:
                    captions.append(" ".join(f.read().split()))
            else:
                captions.append("")
        labels["caption"] = captions
        return labels


def read_caption_list(path: str, path_column: str = "path",
                      caption_column: str = "caption") -> tuple[list[str], list[str]]:
    """Paths and captions from a CSV (with a header) or JSONL file."""
    paths, captions = [], []
    if path.endswith((".jsonl", ".json")):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    paths.append(str(row[path_column]))
                    captions.append(str(row.get(caption_column, "")))
                except (json.JSONDecodeError, KeyError, AttributeError) as err:
                    raise ConfigError(f"{path}:{n}: expected a JSON object with '{path_column}' "
                                      f"and '{caption_column}' ({err})") from None
        return paths, captions
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or path_column not in reader.fieldnames:
            raise ConfigError(f"{path}: CSV header must name a '{path_column}' column "
                              f"(and '{caption_column}'); found {reader.fieldnames}")
        for row in reader:
            paths.append(row[path_column])
            captions.append(row.get(caption_column) or "")
    return paths, captions


class ImageCaptionList(ImagePaths):
    """Image paths and captions from a CSV or JSONL list file.

    Args:
        list_file: `.csv` (header with `path_column`, `caption_column`) or `.jsonl`.
        data_root: folder that relative paths start from (default: the list file's folder).
        path_column: name of the path column / JSON field.
        caption_column: name of the caption column / JSON field.
        size, crop_size, random_crop, flip_p, interpolation, keys, key_map: as for `ImageFolder`.
    """

    def __init__(self, list_file: str = "data/captions.csv", data_root: str | None = None,
                 path_column: str = "path", caption_column: str = "caption", size: int | None = 256,
                 crop_size: int | None = None, random_crop: bool = False, flip_p: float = 0.0,
                 interpolation: str = "bicubic", keys: Sequence[str] | None = None,
                 key_map: Mapping[str, str] | None = None) -> None:
        if not os.path.isfile(list_file):
            raise missing_data(type(self).__name__, list_file,
                               "a CSV with header 'path,caption' or a JSONL of {\"path\", \"caption\"}")
        root = data_root if data_root is not None else os.path.dirname(os.path.abspath(list_file))
        rel, captions = read_caption_list(list_file, path_column, caption_column)
        paths = [p if os.path.isabs(p) else os.path.join(root, p) for p in rel]
        check_files_exist(paths, f"{type(self).__name__}: list file '{list_file}'")
        super().__init__(paths, _transform(size, crop_size, random_crop, flip_p, interpolation),
                         labels={"caption": [" ".join(c.split()) for c in captions],
                                 "relative_file_path_": rel}, keys=keys, key_map=key_map)


class ClassFolder(ImagePaths):
    """Images in one subfolder per class: `class_label` (sorted folder index) and `human_label`.

    Args:
        data_root: folder holding one subfolder per class.
        size, crop_size, random_crop, flip_p, interpolation, keys, key_map: as for `ImageFolder`.
    """

    layout = "DATA_ROOT/<class name>/**/*.{png,jpg,jpeg,webp}"

    def __init__(self, data_root: str = "data/classes", size: int | None = 256, crop_size: int | None = None,
                 random_crop: bool = False, flip_p: float = 0.0, interpolation: str = "bicubic",
                 keys: Sequence[str] | None = None, key_map: Mapping[str, str] | None = None) -> None:
        root = require_dir(type(self).__name__, data_root, self.layout)
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        paths, labels, names = [], [], []
        for index, name in enumerate(self.classes):
            found = list_images(root / name)
            paths += found
            labels += [index] * len(found)
            names += [name] * len(found)
        if not paths:
            raise missing_data(type(self).__name__, data_root, self.layout)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        super().__init__(paths, _transform(size, crop_size, random_crop, flip_p, interpolation),
                         labels={"class_label": labels, "human_label": names}, keys=keys, key_map=key_map)
