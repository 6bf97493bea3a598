"""LSUN churches, bedrooms and cats with the original's text-file lists (`ldm.data.lsun.*`).

Layout (relative to the working directory, as in the original):
- churches: images under `data/lsun/churches/`, lists `data/lsun/church_outdoor_{train,val}.txt`;
- bedrooms: `data/lsun/bedrooms/`, `data/lsun/bedrooms_{train,val}.txt`;
- cats: `data/lsun/cats/`, `data/lsun/cat_{train,val}.txt`.
Each list names image files relative to the image folder, one a line.

Preprocessing as the original (score-sde's): centre square crop, resize to size x size with
`interpolation`, horizontal flip with `flip_p` (0.5 for train, 0 for validation).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ldm.data.base import ImagePaths, ImageTransform, check_files_exist, missing_data, read_list_file


class LSUNBase(ImagePaths):
    """An LSUN category from a list file.

    Args:
        txt_file: list of image names relative to `data_root`.
        data_root: folder of the images.
        size: output side (None: the centre crop at native resolution).
        interpolation: `linear`, `bilinear`, `bicubic` or `lanczos`.
        flip_p: probability of a horizontal flip.
        keys: if given, only these keys are returned.
        key_map: renames of returned keys.
    """

    def __init__(self, txt_file: str, data_root: str, size: int | None = None,
                 interpolation: str = "bicubic", flip_p: float = 0.5,
                 keys: Sequence[str] | None = None, key_map: Mapping[str, str] | None = None) -> None:
        if not os.path.isfile(txt_file):
            raise missing_data(type(self).__name__, txt_file,
                               f"a list of image names relative to '{data_root}', one a line")
        rel = read_list_file(txt_file)
        paths = [os.path.join(data_root, r) for r in rel]
        check_files_exist(paths, f"{type(self).__name__}: list file '{txt_file}'")
        self.data_root = data_root
        transform = ImageTransform(size=size, interpolation=interpolation, flip_p=flip_p, mode="crop_resize")
        super().__init__(paths, transform, labels={"relative_file_path_": rel}, keys=keys, key_map=key_map)


class LSUNChurchesTrain(LSUNBase):
    """LSUN churches train: images in `data/lsun/churches/`, list `data/lsun/church_outdoor_train.txt`."""

    def __init__(self, txt_file: str = "data/lsun/church_outdoor_train.txt", data_root: str = "data/lsun/churches",
                 flip_p: float = 0.5, **kwargs) -> None:
        super().__init__(txt_file=txt_file, data_root=data_root, flip_p=flip_p, **kwargs)


class LSUNChurchesValidation(LSUNBase):
    """LSUN churches validation: images in `data/lsun/churches/`, list `data/lsun/church_outdoor_val.txt`."""

    def __init__(self, txt_file: str = "data/lsun/church_outdoor_val.txt", data_root: str = "data/lsun/churches",
                 flip_p: float = 0.0, **kwargs) -> None:
        super().__init__(txt_file=txt_file, data_root=data_root, flip_p=flip_p, **kwargs)


class LSUNBedroomsTrain(LSUNBase):
    """LSUN bedrooms train: images in `data/lsun/bedrooms/`, list `data/lsun/bedrooms_train.txt`."""

    def __init__(self, txt_file: str = "data/lsun/bedrooms_train.txt", data_root: str = "data/lsun/bedrooms",
                 flip_p: float = 0.5, **kwargs) -> None:
        super().__init__(txt_file=txt_file, data_root=data_root, flip_p=flip_p, **kwargs)


class LSUNBedroomsValidation(LSUNBase):
    """LSUN bedrooms validation: images in `data/lsun/bedrooms/`, list `data/lsun/bedrooms_val.txt`."""

    def __init__(self, txt_file: str = "data/lsun/bedrooms_val.txt", data_root: str = "data/lsun/bedrooms",
                 flip_p: float = 0.0, **kwargs) -> None:
        super().__init__(txt_file=txt_file, data_root=data_root, flip_p=flip_p, **kwargs)


class LSUNCatsTrain(LSUNBase):
    """LSUN cats train: images in `data/lsun/cats/`, list `data/lsun/cat_train.txt`."""

    def __init__(self, txt_file: str = "data/lsun/cat_train.txt", data_root: str = "data/lsun/cats",
                 flip_p: float = 0.5, **kwargs) -> None:
        super().__init__(txt_file=txt_file, data_root=data_root, flip_p=flip_p, **kwargs)


class LSUNCatsValidation(LSUNBase):
    """LSUN cats validation: images in `data/lsun/cats/`, list `data/lsun/cat_val.txt`."""

    def __init__(self, txt_file: str = "data/lsun/cat_val.txt", data_root: str = "data/lsun/cats",
                 flip_p: float = 0.0, **kwargs) -> None:
        super().__init__(txt_file=txt_file, data_root=data_root, flip_p=flip_p, **kwargs)
