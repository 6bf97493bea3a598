"""CelebA-HQ and FFHQ in taming-transformers' layouts (the targets `taming.data.faceshq.*` map here).

Layouts (relative to the working directory, as in taming and the released configs):
- CelebA-HQ: `data/celebahq/` holding the images, and the split lists `data/celebahqtrain.txt`,
  `data/celebahqvalidation.txt` naming files relative to it. Files are PNG/JPEG, or the `.npy`
  arrays that taming's preparation writes (uint8, shape (1, 3, H, W) or (H, W, 3)).
- FFHQ: `data/ffhq/` with `data/ffhqtrain.txt`, `data/ffhqvalidation.txt`.
Without a list file, `data_root/train/` and `data_root/validation/` (or `val/`) folders work too.

Transforms as in taming: smaller side to `size`, centre crop (random with `random_crop`);
`crop_size` and `flip_p` add taming's FacesHQ-style random crop and flip.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from ldm.data.base import (ImagePaths, ImageTransform, check_files_exist, list_images, load_image, missing_data,
                           read_list_file)


def load_npy_image(path: str, draft_size: int | None = None) -> Image.Image:
    """An image stored as a numpy array: (1, 3, H, W) or (3, H, W) (taming) or (H, W, 3), uint8."""
    arr = np.load(path, allow_pickle=False)
    arr = arr.squeeze(0) if arr.ndim == 4 else arr
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"array of shape {arr.shape} is not an image")
    return Image.fromarray(arr).convert("RGB")


def load_any(path: str, draft_size: int | None = None) -> Image.Image:
    """`.npy` arrays or image files."""
    return load_npy_image(path) if path.endswith(".npy") else load_image(path, draft_size)


def split_files(name: str, data_root: str, list_file: str, split: str) -> list[str]:
    """Paths of a split: from the list file, else from `data_root/<split>/`; fails if neither."""
    if os.path.isfile(list_file):
        paths = [os.path.join(data_root, rel) for rel in read_list_file(list_file)]
        check_files_exist(paths, f"{name}: list file '{list_file}'")
        return paths
    for folder in ((split, "val") if split == "validation" else (split,)):
        sub = os.path.join(data_root, folder)
        if os.path.isdir(sub):
            found = list_images(sub, extensions=(".png", ".jpg", ".jpeg", ".webp", ".npy"))
            if found:
                return found
    raise missing_data(name, list_file, f"a list of file names relative to '{data_root}' "
                                        f"(taming's split lists), or images in '{data_root}/{split}/'")


class FacesBase(ImagePaths):
    """A split of a faces data set.

    Args:
        size: smaller side after resizing (taming: 256).
        keys: if given, only these keys are returned (taming's `keys`).
        crop_size: random crop of this side after resizing (taming's FacesHQ); default: centre `size`.
        random_crop: random instead of centre crop.
        flip_p: probability of a horizontal flip.
        data_root: folder the list file's names are relative to.
        list_file: the split's list file.
        key_map: renames of returned keys.
        coord: also return taming's `coord` map (per-pixel y, x in [0, 1]).
    """

    default_root = ""
    default_list = ""
    split = "train"

    def __init__(self, size: int | None = 256, keys: Sequence[str] | None = None,
                 crop_size: int | None = None, random_crop: bool = False, flip_p: float = 0.0,
                 data_root: str | None = None, list_file: str | None = None,
                 key_map: Mapping[str, str] | None = None, coord: bool = False) -> None:
        data_root = data_root or self.default_root
        list_file = list_file or self.default_list
        paths = split_files(type(self).__name__, data_root, list_file, self.split)
        transform = ImageTransform(size=size, crop_size=crop_size, random_crop=random_crop or bool(crop_size),
                                   flip_p=flip_p)
        self.coord = coord
        rel = [os.path.relpath(p, data_root) for p in paths]
        super().__init__(paths, transform, labels={"relative_file_path_": rel}, keys=keys,
                         key_map=key_map, loader=load_any)

    def example(self, i: int, img: Image.Image, rng: np.random.Generator | None) -> dict:
        """Image plus, with `coord`, taming's coordinate map (y, x in [0, 1] per pixel)."""
        ex = super().example(i, img, rng)
        if self.coord:
            h, w = ex["image"].shape[:2]
            yy, xx = np.meshgrid(np.linspace(0, 1, h, dtype=np.float32), np.linspace(0, 1, w, dtype=np.float32),
                                 indexing="ij")
            ex["coord"] = np.stack([yy, xx], axis=-1)
        return ex


class CelebAHQTrain(FacesBase):
    """CelebA-HQ train split: `data/celebahq/` + `data/celebahqtrain.txt` (see FacesBase args)."""

    default_root, default_list, split = "data/celebahq", "data/celebahqtrain.txt", "train"


class CelebAHQValidation(FacesBase):
    """CelebA-HQ validation split: `data/celebahq/` + `data/celebahqvalidation.txt`."""

    default_root, default_list, split = "data/celebahq", "data/celebahqvalidation.txt", "validation"


class FFHQTrain(FacesBase):
    """FFHQ train split: `data/ffhq/` + `data/ffhqtrain.txt` (see FacesBase args)."""

    default_root, default_list, split = "data/ffhq", "data/ffhqtrain.txt", "train"


class FFHQValidation(FacesBase):
    """FFHQ validation split: `data/ffhq/` + `data/ffhqvalidation.txt`."""

    default_root, default_list, split = "data/ffhq", "data/ffhqvalidation.txt", "validation"
