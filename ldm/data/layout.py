"""Layout-to-image conditioning: object boxes as token sequences, as taming-transformers builds them.

taming's `ObjectsBoundingBoxConditionalBuilder` describes a scene by up to `no_max_objects`
triples (object token, top-left token, bottom-right token), padded with the "none" token
`no_tokens - 1`, plus two crop tokens when `encode_crop` is set. Coordinates in [0, 1] are
quantized on a grid of `int(sqrt(no_tokens))` sections per side: token = y_q * sections + x_q.
The object token is `category_no + no_object_classes * modifier`, the modifier holding the
group-of flag (bit 0) and, with additional parameters, occluded / depiction / inside (bits 1-3).
The released `layout2img-openimages256` model reads these sequences (vocabulary 8192, length
30 * 3 + 2 = 92) under the key `coordinates_bbox`.

`LayoutPaths` is the map-style data set shared by the COCO and OpenImages loaders: an image list
plus per-image annotations -> image, tokens and fixed-size box arrays.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from ldm.data.base import ImagePaths, ImageTransform, WarnCounter, crop_box, sample_rng, to_float
from ldm.util import ConfigError

BBox = tuple[float, float, float, float]  # x0, y0, w, h relative to the image
FULL_CROP: BBox = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Annotation:
    """One object of an image: relative box (x0, y0, w, h), its class number and flags."""

    bbox: BBox
    category_no: int
    is_group_of: bool = False
    is_occluded: bool = False
    is_depiction: bool = False
    is_inside: bool = False


def intersection_area(a: BBox, b: BBox) -> float:
    """Area of the intersection of two (x0, y0, w, h) boxes."""
    dx = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    dy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0.0, dx) * max(0.0, dy)


def rescale_annotations(annotations: Sequence[Annotation], crop: BBox, flip: bool) -> list[Annotation]:
    """Boxes relative to `crop`, clamped to it, mirrored when `flip` (taming's rule)."""
    def clamp(x: float) -> float:
        return max(min(x, 1.0), 0.0)

    out = []
    for a in annotations:
        x0 = clamp((a.bbox[0] - crop[0]) / crop[2])
        y0 = clamp((a.bbox[1] - crop[1]) / crop[3])
        w = min(a.bbox[2] / crop[2], 1 - x0)
        h = min(a.bbox[3] / crop[3], 1 - y0)
        if flip:
            x0 = 1 - (x0 + w)
        out.append(replace(a, bbox=(x0, y0, w, h)))
    return out


class ObjectsBoundingBoxConditionalBuilder:
    """taming's objects-bbox conditional builder: annotations -> LongTensor-ready token list.

    Args:
        no_object_classes: number of object categories.
        no_max_objects: number of (object, top-left, bottom-right) triples, padded with "none".
        no_tokens: vocabulary size; the coordinate grid has int(sqrt(no_tokens)) sections per side.
        encode_crop: append the crop's two corner tokens (the released layout model does).
        use_group_parameter: encode the group-of flag in the object token.
        use_additional_parameters: encode occluded / depiction / inside flags too.
    """

    def __init__(self, no_object_classes: int, no_max_objects: int = 30, no_tokens: int = 8192,
                 encode_crop: bool = True, use_group_parameter: bool = True,
                 use_additional_parameters: bool = False) -> None:
        self.no_object_classes = no_object_classes
        self.no_max_objects = no_max_objects
        self.no_tokens = no_tokens
        self.encode_crop = encode_crop
        self.no_sections = int(math.sqrt(no_tokens))
        self.use_group_parameter = use_group_parameter
        self.use_additional_parameters = use_additional_parameters
        modifiers = 16 if use_additional_parameters else (2 if use_group_parameter else 1)
        if no_object_classes * modifiers > self.none:
            raise ConfigError(
                f"layout vocabulary too small: {no_object_classes} classes x {modifiers} flag "
                f"combinations need more than no_tokens={no_tokens}; use fewer classes "
                f"(category_allow_list) or use_additional_parameters: false")

    @property
    def none(self) -> int:
        """The padding token."""
        return self.no_tokens - 1

    @property
    def embedding_dim(self) -> int:
        """Length of a token sequence."""
        return self.no_max_objects * 3 + (2 if self.encode_crop else 0)

    def tokenize_coordinates(self, x: float, y: float) -> int:
        """A point in [0, 1]^2 as one grid token (row-major)."""
        n = self.no_sections - 1
        return int(round(y * n)) * self.no_sections + int(round(x * n))

    def coordinates_from_token(self, token: int) -> tuple[float, float]:
        """Inverse of `tokenize_coordinates` (to the grid's precision)."""
        n = self.no_sections - 1
        return (token % self.no_sections) / n, (token // self.no_sections) / n

    def token_pair_from_bbox(self, bbox: BBox) -> tuple[int, int]:
        """Top-left and bottom-right tokens of an (x0, y0, w, h) box."""
        return (self.tokenize_coordinates(bbox[0], bbox[1]),
                self.tokenize_coordinates(bbox[0] + bbox[2], bbox[1] + bbox[3]))

    def object_representation(self, a: Annotation) -> int:
        """Class number plus the flag modifier."""
        modifier = 0
        if self.use_group_parameter:
            modifier |= 1 * bool(a.is_group_of)
        if self.use_additional_parameters:
            modifier |= 2 * bool(a.is_occluded) | 4 * bool(a.is_depiction) | 8 * bool(a.is_inside)
        return a.category_no + self.no_object_classes * modifier

    def build(self, annotations: Sequence[Annotation], crop: BBox | None = None, flip: bool = False,
              rng: np.random.Generator | None = None) -> tuple[list[int], list[Annotation]]:
        """Token list and the (shuffled, cropped, rescaled) annotations it encodes.

        `rng` shuffles the object order as taming does (None keeps the given order).
        """
        crop = crop or FULL_CROP
        annotations = list(annotations)[: self.no_max_objects]
        if rng is not None:
            annotations = [annotations[k] for k in rng.permutation(len(annotations))]
        annotations = [a for a in annotations if intersection_area(a.bbox, crop) > 0.0]
        if self.encode_crop:
            annotations = rescale_annotations(annotations, FULL_CROP, flip)
            if flip:
                crop = (1 - (crop[0] + crop[2]), crop[1], crop[2], crop[3])
            extra = list(self.token_pair_from_bbox(crop))
        else:
            annotations = rescale_annotations(annotations, crop, flip)
            extra = []
        triples = [(self.object_representation(a), *self.token_pair_from_bbox(a.bbox)) for a in annotations]
        triples += [(self.none, self.none, self.none)] * (self.no_max_objects - len(triples))
        tokens = [t for triple in triples for t in triple] + extra
        return tokens, annotations


class LayoutPaths(ImagePaths):
    """Images with object annotations -> `image`, `coordinates_bbox` tokens, `bboxes`, `bbox_labels`.

    Training crops a random square of the shorter side and flips with `flip_p`; validation crops
    the centre. `bboxes` are (no_max_objects, 4) relative (x0, y0, x1, y1) of the crop, padded
    with zeros; `bbox_labels` the class numbers, padded with -1.
    """

    def __init__(self, paths: Sequence[str], annotations: Sequence[Sequence[Annotation]],
                 builder: ObjectsBoundingBoxConditionalBuilder, size: int = 256,
                 random_crop: bool = False, flip_p: float = 0.0, category_names: Sequence[str] = (),
                 keys: Sequence[str] | None = None, key_map: Mapping[str, str] | None = None) -> None:
        super().__init__(paths, ImageTransform(size=size, crop_size=size), keys=keys, key_map=key_map)
        self.annotations = [list(a) for a in annotations]
        self.builder = builder
        self.size = size
        self.random_crop = random_crop
        self.flip_p = flip_p
        self.category_names = list(category_names)
        self.no_objects = WarnCounter(f"{type(self).__name__}: image without objects in its crop")

    def example(self, i: int, img: Image.Image, rng: np.random.Generator | None) -> dict:
        """Crop, flip and tokenize one image with its annotations."""
        rng = rng if rng is not None else sample_rng()
        w, h = img.size
        side = min(w, h)
        box = crop_box(w, h, side, side, rng if self.random_crop else None)
        crop = (box[0] / w, box[1] / h, side / w, side / h)
        flip = self.flip_p > 0 and rng.random() < self.flip_p
        img = img.crop(box).resize((self.size, self.size), resample=Image.Resampling.BICUBIC)
        if flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        tokens, kept = self.builder.build(self.annotations[i], crop, flip, rng if self.random_crop else None)
        if not kept:
            self.no_objects(self.paths[i])
        if self.builder.encode_crop:  # kept boxes are relative to the full image: express in the crop
            kept = rescale_annotations(kept, (crop[0] if not flip else 1 - crop[0] - crop[2], crop[1],
                                              crop[2], crop[3]), False)
        n = self.builder.no_max_objects
        bboxes = np.zeros((n, 4), dtype=np.float32)
        labels = np.full((n,), -1, dtype=np.int64)
        for k, a in enumerate(kept):
            bboxes[k] = (a.bbox[0], a.bbox[1], a.bbox[0] + a.bbox[2], a.bbox[1] + a.bbox[3])
            labels[k] = a.category_no
        return {"image": to_float(img), "coordinates_bbox": np.asarray(tokens, dtype=np.int64),
                "bboxes": bboxes, "bbox_labels": labels, "file_path_": self.paths[i]}
