"""Places365-Standard (the LDM paper's inpainting benchmark data) with its scene-class labels.

Layout (default `data/places365`, the official 256 px release):
- train: `data_256/a/airfield/00000001.jpg ...` listed in `places365_train_standard.txt`
  (`/a/airfield/00000001.jpg 0` per line);
- validation: `val_256/Places365_val_00000001.jpg ...` listed in `places365_val.txt`
  (`Places365_val_00000001.jpg 165`);
- class names: `categories_places365.txt` (`/a/airfield 0`), optional.
For inpainting wrap them in `ldm.data.inpainting.InpaintingDataset`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ldm.data.base import ImagePaths, ImageTransform, check_files_exist, missing_data, read_list_file


class PlacesBase(ImagePaths):
    """A Places365 split with `class_label` and `human_label`.

    Args:
        data_root: the Places365 folder.
        size: smaller side after resizing, then a square crop.
        random_crop: random crop (default: train yes).
        flip_p: probability of a horizontal flip.
        keys: if given, only these keys are returned.
        key_map: renames of returned keys.
    """

    list_name, image_dir, train = "places365_train_standard.txt", "data_256", True

    def __init__(self, data_root: str = "data/places365", size: int | None = 256, random_crop: bool | None = None,
                 flip_p: float = 0.0, keys: Sequence[str] | None = None,
                 key_map: Mapping[str, str] | None = None) -> None:
        list_file = os.path.join(data_root, self.list_name)
        if not os.path.isfile(list_file):
            raise missing_data(type(self).__name__, list_file,
                               f"DATA_ROOT/{self.list_name} listing images under DATA_ROOT/{self.image_dir}/")
        rows = [line.split() for line in read_list_file(list_file)]
        paths = [os.path.join(data_root, self.image_dir, r[0].lstrip("/")) for r in rows]
        check_files_exist(paths, f"{type(self).__name__}: list file '{list_file}'")
        names: dict[int, str] = {}
        categories = os.path.join(data_root, "categories_places365.txt")
        if os.path.isfile(categories):
            for name, index in (line.split() for line in read_list_file(categories)):
                names[int(index)] = name.strip("/").split("/", 1)[-1].replace("/", " ").replace("_", " ")
        labels = [int(r[1]) if len(r) > 1 else -1 for r in rows]
        transform = ImageTransform(size=size, random_crop=self.train if random_crop is None else random_crop,
                                   flip_p=flip_p)
        super().__init__(paths, transform, labels={"class_label": labels,
                                                   "human_label": [names.get(c, str(c)) for c in labels]},
                         keys=keys, key_map=key_map)


class PlacesTrain(PlacesBase):
    """Places365-Standard train split."""

    list_name, image_dir, train = "places365_train_standard.txt", "data_256", True


class PlacesValidation(PlacesBase):
    """Places365-Standard validation split."""

    list_name, image_dir, train = "places365_val.txt", "val_256", False
