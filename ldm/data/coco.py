"""COCO: layout-to-image from instances JSON (objects-bbox tokens) and image-caption pairs.

Layout (defaults, relative to the working directory): `data/coco/train2017/*.jpg`,
`data/coco/val2017/*.jpg`, `data/coco/annotations/instances_{train,val}2017.json` (optionally
`stuff_{train,val}2017.json` too) and `captions_{train,val}2017.json`.

Class numbers are the positions of the category ids in sorted order over the annotation files
given (80 things, or 80 + 92 stuff = 172 with the stuff file, +1 for COCO-Stuff's "other"
when present), as taming-transformers numbers them.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from ldm.data.base import ImagePaths, ImageTransform, check_files_exist, missing_data, sample_rng, to_float
from ldm.data.layout import Annotation, LayoutPaths, ObjectsBoundingBoxConditionalBuilder

COCO_LAYOUT = "DATA_ROOT/{train,val}2017/*.jpg and DATA_ROOT/annotations/instances_{train,val}2017.json"


def _load_json(name: str, path: str) -> dict:
    if not os.path.isfile(path):
        raise missing_data(name, path, COCO_LAYOUT)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_coco_objects(name: str, files: Sequence[str], min_object_area: float = 0.0
                      ) -> tuple[dict[int, str], list[str], dict[str, list[Annotation]]]:
    """Categories (number -> name), image file names, and each image's annotations."""
    docs = [_load_json(name, f) for f in files]
    categories = {c["id"]: c["name"] for doc in docs for c in doc.get("categories", [])}
    number = {cid: i for i, cid in enumerate(sorted(categories))}
    images = {img["id"]: img for doc in docs for img in doc.get("images", [])}
    per_image: dict[str, list[Annotation]] = defaultdict(list)
    for doc in docs:
        for ann in doc.get("annotations", []):
            img = images.get(ann["image_id"])
            if img is None or ann["category_id"] not in number:
                continue
            w, h = float(img["width"]), float(img["height"])
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            bbox = (x / w, y / h, bw / w, bh / h)
            if bbox[2] * bbox[3] < min_object_area:
                continue
            per_image[img["file_name"]].append(
                Annotation(bbox, number[ann["category_id"]], is_group_of=bool(ann.get("iscrowd", 0))))
    names = {number[cid]: categories[cid] for cid in categories}
    return names, sorted(img["file_name"] for img in images.values()), per_image


class COCOBBoxBase(LayoutPaths):
    """COCO images with their objects as taming's objects-bbox tokens (`coordinates_bbox`).

    Args:
        size: output side.
        data_root: COCO folder (images in `<split>/`, JSON in `annotations/`).
        annotation_files: instances (and stuff) JSON files; default the split's instances file.
        no_tokens: vocabulary size of the tokens.
        no_max_objects: objects per sequence.
        encode_crop: append the crop's tokens.
        use_group_parameter: encode `iscrowd` in the object token.
        min_object_area: drop objects smaller than this fraction of the image.
        min_objects_per_image: drop images with fewer objects.
        random_crop: random square crop (default: train yes, validation no).
        flip_p: probability of a horizontal flip (default: train 0.5, validation 0).
        keys: if given, only these keys are returned.
        key_map: renames of returned keys.
    """

    split = "train2017"
    train = True

    def __init__(self, size: int = 256, data_root: str = "data/coco",
                 annotation_files: Sequence[str] | None = None, no_tokens: int = 8192,
                 no_max_objects: int = 30, encode_crop: bool = False, use_group_parameter: bool = True,
                 min_object_area: float = 0.00001, min_objects_per_image: int = 2,
                 random_crop: bool | None = None, flip_p: float | None = None,
                 keys: Sequence[str] | None = None, key_map: Mapping[str, str] | None = None) -> None:
        name = type(self).__name__
        files = annotation_files or [os.path.join(data_root, "annotations", f"instances_{self.split}.json")]
        categories, file_names, objects = read_coco_objects(name, files, min_object_area)
        file_names = [f for f in file_names if len(objects.get(f, ())) >= min_objects_per_image]
        paths = [os.path.join(data_root, self.split, f) for f in file_names]
        check_files_exist(paths, f"{name}: {files[0]}")
        builder = ObjectsBoundingBoxConditionalBuilder(len(categories), no_max_objects, no_tokens,
                                                       encode_crop, use_group_parameter)
        super().__init__(paths, [objects[f] for f in file_names], builder, size,
                         random_crop=self.train if random_crop is None else random_crop,
                         flip_p=(0.5 if self.train else 0.0) if flip_p is None else flip_p,
                         category_names=[categories[i] for i in range(len(categories))],
                         keys=keys, key_map=key_map)


class COCOBBoxTrain(COCOBBoxBase):
    """COCO 2017 train images with object-bbox tokens."""

    split, train = "train2017", True


class COCOBBoxValidation(COCOBBoxBase):
    """COCO 2017 validation images with object-bbox tokens."""

    split, train = "val2017", False


class COCOCaptionsBase(ImagePaths):
    """COCO image-caption pairs: a random one of an image's captions in train, the first otherwise.

    Args:
        size: smaller side after resizing, then a square crop.
        data_root: COCO folder.
        random_crop: random crop (default: train yes).
        flip_p: probability of a horizontal flip.
        keys: if given, only these keys are returned.
        key_map: renames of returned keys (e.g. caption -> txt).
    """

    split = "train2017"
    train = True

    def __init__(self, size: int = 256, data_root: str = "data/coco", random_crop: bool | None = None,
                 flip_p: float = 0.0, keys: Sequence[str] | None = None,
                 key_map: Mapping[str, str] | None = None) -> None:
        doc = _load_json(type(self).__name__, os.path.join(data_root, "annotations", f"captions_{self.split}.json"))
        captions: dict[int, list[str]] = defaultdict(list)
        for ann in doc["annotations"]:
            captions[ann["image_id"]].append(" ".join(ann["caption"].split()))
        images = sorted((img for img in doc["images"] if captions.get(img["id"])), key=lambda i: i["file_name"])
        paths = [os.path.join(data_root, self.split, img["file_name"]) for img in images]
        check_files_exist(paths, f"{type(self).__name__}: captions_{self.split}.json")
        self.captions = [captions[img["id"]] for img in images]
        transform = ImageTransform(size=size, random_crop=self.train if random_crop is None else random_crop,
                                   flip_p=flip_p)
        super().__init__(paths, transform, keys=keys, key_map=key_map)

    def example(self, i: int, img: Image.Image, rng: np.random.Generator | None) -> dict:
        """Image and one of its captions."""
        rng = rng if rng is not None else sample_rng()
        options = self.captions[i]
        caption = options[int(rng.integers(len(options)))] if self.train else options[0]
        return {"image": to_float(self.transform(img, rng, self.paths[i])), "caption": caption,
                "file_path_": self.paths[i]}


class COCOCaptionsTrain(COCOCaptionsBase):
    """COCO 2017 train image-caption pairs."""

    split, train = "train2017", True


class COCOCaptionsValidation(COCOCaptionsBase):
    """COCO 2017 validation image-caption pairs."""

    split, train = "val2017", False
