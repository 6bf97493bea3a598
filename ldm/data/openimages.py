"""OpenImages: full images (first-stage training), boxes (layout-to-image) and super-resolution.

Layout (default `data/openimages`, as the OpenImages downloader writes it and taming reads it):
- images `DATA_ROOT/train/<ImageID>.jpg`, `DATA_ROOT/validation/<ImageID>.jpg` (subfolders allowed);
- boxes `oidv6-train-annotations-bbox.csv` / `validation-annotations-bbox.csv` and class names
  `class-descriptions-boxable.csv` (no header: `/m/011k07,Tortoise`), in DATA_ROOT or
  DATA_ROOT/annotations. Box coordinates are relative (XMin, XMax, YMin, YMax).

The released configs name these classes; the original modules were never published, so the
parameters follow those configs (`size`, `crop_size`; the SR ones take ImageNetSR's).
"""
from __future__ import annotations

import csv
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence

from ldm.data.base import ImagePaths, ImageTransform, list_images, missing_data, read_list_file
from ldm.data.layout import Annotation, LayoutPaths, ObjectsBoundingBoxConditionalBuilder
from ldm.data.superres import SuperresPaths

IMAGES_LAYOUT = "DATA_ROOT/{train,validation}/<ImageID>.jpg"
ANNOTATIONS = {"train": "oidv6-train-annotations-bbox.csv", "validation": "validation-annotations-bbox.csv",
               "test": "test-annotations-bbox.csv"}


def split_images(name: str, data_root: str, split: str) -> list[str]:
    """All images of a split folder; the one-line error when there are none."""
    folder = os.path.join(data_root, split)
    paths = list_images(folder) if os.path.isdir(folder) else []
    if not paths:
        raise missing_data(name, folder, IMAGES_LAYOUT)
    return paths


class FullOpenImagesBase(ImagePaths):
    """Every image of an OpenImages split, for autoencoder training.

    Args:
        size: smaller side after resizing (None: native resolution).
        crop_size: side of the square crop (default `size`).
        random_crop: random crop (default: train yes, validation no).
        flip_p: probability of a horizontal flip.
        data_root: OpenImages folder.
        keys: if given, only these keys are returned.
        key_map: renames of returned keys.
    """

    split = "train"

    def __init__(self, size: int | None = None, crop_size: int | None = 256, random_crop: bool | None = None,
                 flip_p: float = 0.0, data_root: str = "data/openimages", keys: Sequence[str] | None = None,
                 key_map: Mapping[str, str] | None = None) -> None:
        paths = split_images(type(self).__name__, data_root, self.split)
        random_crop = (self.split == "train") if random_crop is None else random_crop
        super().__init__(paths, ImageTransform(size=size, crop_size=crop_size, random_crop=random_crop,
                                               flip_p=flip_p), keys=keys, key_map=key_map)


class FullOpenImagesTrain(FullOpenImagesBase):
    """OpenImages train images."""

    split = "train"


class FullOpenImagesValidation(FullOpenImagesBase):
    """OpenImages validation images."""

    split = "validation"


def _find_csv(data_root: str, name: str) -> str:
    for folder in (data_root, os.path.join(data_root, "annotations")):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise missing_data("OpenImages", os.path.join(data_root, name),
                       f"{name} in DATA_ROOT or DATA_ROOT/annotations (OpenImages box CSVs)")


def read_openimages_boxes(data_root: str, split: str, allow: set[str] | None, min_object_area: float
                          ) -> tuple[list[str], dict[str, list[Annotation]]]:
    """Sorted class ids and each ImageID's annotations from the OpenImages CSVs."""
    with open(_find_csv(data_root, "class-descriptions-boxable.csv"), encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f) if r and r[0].startswith("/")]
    names = {r[0]: r[1] if len(r) > 1 else r[0] for r in rows}
    ids = sorted(k for k, v in names.items() if allow is None or k in allow or v in allow)
    number = {label: i for i, label in enumerate(ids)}
    per_image: dict[str, list[Annotation]] = defaultdict(list)
    with open(_find_csv(data_root, ANNOTATIONS[split]), encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            label = row["LabelName"]
            if label not in number:
                continue
            x0, x1, y0, y1 = (float(row[k]) for k in ("XMin", "XMax", "YMin", "YMax"))
            if (x1 - x0) * (y1 - y0) < min_object_area:
                continue
            flag = lambda key: row.get(key, "0") == "1"  # noqa: E731
            per_image[row["ImageID"]].append(Annotation(
                (x0, y0, x1 - x0, y1 - y0), number[label], is_group_of=flag("IsGroupOf"),
                is_occluded=flag("IsOccluded"), is_depiction=flag("IsDepiction"), is_inside=flag("IsInside")))
    return [names[i] for i in ids], per_image


class OpenImagesBBoxBase(LayoutPaths):
    """OpenImages images with their boxes as taming's objects-bbox tokens (`coordinates_bbox`).

    The released `layout2img-openimages256` model reads 92 tokens of a 8192 vocabulary:
    30 objects and the crop. Class numbers are the sorted label ids (after `category_allow_list`).

    Args:
        size: output side.
        data_root: OpenImages folder.
        no_tokens: vocabulary size.
        no_max_objects: objects per sequence.
        encode_crop: append the crop's two tokens.
        use_group_parameter: encode IsGroupOf in the object token.
        use_additional_parameters: also encode IsOccluded / IsDepiction / IsInside.
        category_allow_list: label ids or names to keep (list, or a text file, one a line).
        min_object_area: drop boxes smaller than this fraction of the image.
        min_objects_per_image: drop images with fewer boxes.
        random_crop: random square crop (default: train yes).
        flip_p: probability of a horizontal flip (default: train 0.5).
        keys: if given, only these keys are returned.
        key_map: renames of returned keys.
    """

    split = "train"

    def __init__(self, size: int = 256, data_root: str = "data/openimages", no_tokens: int = 8192,
                 no_max_objects: int = 30, encode_crop: bool = True, use_group_parameter: bool = True,
                 use_additional_parameters: bool = False, category_allow_list: str | Sequence[str] | None = None,
                 min_object_area: float = 0.0001, min_objects_per_image: int = 2,
                 random_crop: bool | None = None, flip_p: float | None = None,
                 keys: Sequence[str] | None = None, key_map: Mapping[str, str] | None = None) -> None:
        train = self.split == "train"
        paths = split_images(type(self).__name__, data_root, self.split)
        if isinstance(category_allow_list, str):
            category_allow_list = read_list_file(category_allow_list)
        allow = set(category_allow_list) if category_allow_list else None
        names, boxes = read_openimages_boxes(data_root, self.split, allow, min_object_area)
        by_id = {os.path.splitext(os.path.basename(p))[0]: p for p in paths}
        kept = sorted(i for i in by_id if len(boxes.get(i, ())) >= min_objects_per_image)
        builder = ObjectsBoundingBoxConditionalBuilder(len(names), no_max_objects, no_tokens, encode_crop,
                                                       use_group_parameter, use_additional_parameters)
        super().__init__([by_id[i] for i in kept], [boxes[i] for i in kept], builder, size,
                         random_crop=train if random_crop is None else random_crop,
                         flip_p=(0.5 if train else 0.0) if flip_p is None else flip_p,
                         category_names=names, keys=keys, key_map=key_map)


class OpenImagesBBoxTrain(OpenImagesBBoxBase):
    """OpenImages train images with object-bbox tokens."""

    split = "train"


class OpenImagesBBoxValidation(OpenImagesBBoxBase):
    """OpenImages validation images with object-bbox tokens."""

    split = "validation"


class SuperresOpenImagesAdvancedBase(SuperresPaths):
    """OpenImages super-resolution pairs (the bsr_sr config's parameters).

    Args:
        size: side of the high-resolution image.
        degradation: `bsrgan_light`, `bsrgan`, `pil_nearest`, `bicubic`, ... (see degradations).
        downscale_f: size / LR size.
        min_crop_f: smallest crop as a fraction of the shorter side.
        max_crop_f: largest crop as a fraction of the shorter side.
        random_crop: random crop position.
        data_root: OpenImages folder.
        keys: if given, only these keys are returned.
        key_map: renames of returned keys.
    """

    split = "train"

    def __init__(self, size: int = 256, degradation: str = "bsrgan_light", downscale_f: int = 4,
                 min_crop_f: float = 0.5, max_crop_f: float = 1.0, random_crop: bool = True,
                 data_root: str = "data/openimages", keys: Sequence[str] | None = None,
                 key_map: Mapping[str, str] | None = None) -> None:
        paths = split_images(type(self).__name__, data_root, self.split)
        super().__init__(paths, size=size, degradation=degradation, downscale_f=downscale_f,
                         min_crop_f=min_crop_f, max_crop_f=max_crop_f, random_crop=random_crop,
                         deterministic=self.split != "train", keys=keys, key_map=key_map)


class SuperresOpenImagesAdvancedTrain(SuperresOpenImagesAdvancedBase):
    """OpenImages train super-resolution pairs."""

    split = "train"


class SuperresOpenImagesAdvancedValidation(SuperresOpenImagesAdvancedBase):
    """OpenImages validation super-resolution pairs (fixed per index)."""

    split = "validation"
