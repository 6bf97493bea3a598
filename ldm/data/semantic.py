"""Semantic synthesis: image + label-map pairs, the map one-hot for `SpatialRescaler`.

Label maps are single-channel PNGs of class indices. The same resize (nearest for labels), crop
and flip apply to both. `segmentation` is (H, W, n_labels) float32 one-hot (all zeros where the
label is `ignore_label`, e.g. COCO-Stuff's 255 "unlabeled"); `segmentation_labels` keeps the
(H, W) int64 indices.

- `SemanticFolder`: `DATA_ROOT/images/**/NAME.jpg` with `DATA_ROOT/labels/**/NAME.png`.
- `COCOStuffTrain` / `COCOStuffValidation`: COCO-Stuff 2017 (182 classes): images in
  `data/cocostuff/images/{train,val}2017/`, label maps in `data/cocostuff/annotations/{train,val}2017/`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from ldm.data.base import (ImagePaths, ImageTransform, check_files_exist, crop_box, list_images, load_image,
                           missing_data, sample_rng, to_float)


def load_full_image(path: str, draft_size: int | None = None) -> Image.Image:
    """Decode at full resolution (a label map has the image's size, so no draft decoding)."""
    return load_image(path)


def load_label_map(path: str) -> np.ndarray:
    """A label map as (H, W) int64 (palette PNGs give their indices, RGB ones their first channel)."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("RGB", "RGBA"):
            img = img.getchannel(0)
        return np.asarray(img).astype(np.int64)


class SegmentationPairs(ImagePaths):
    """Images and their label maps.

    Args:
        paths: image files.
        label_paths: label-map files, one per image.
        size: smaller side after resizing (None: native resolution).
        crop_size: side of the square crop (default `size`).
        random_crop: random instead of centre crop.
        flip_p: probability of a horizontal flip.
        n_labels: number of classes (channels of the one-hot map).
        ignore_label: label value with no class (all-zero one-hot).
        shift_labels: added to the labels before one-hot (taming's shift_segmentation is 1).
        onehot: include the one-hot `segmentation` (else only `segmentation_labels`).
        segmentation_to_float32: accepted for the released configs (the one-hot map is float32).
        keys: if given, only these keys are returned.
        key_map: renames of returned keys.
    """

    def __init__(self, paths: Sequence[str], label_paths: Sequence[str], size: int | None = 256,
                 crop_size: int | None = None, random_crop: bool = False, flip_p: float = 0.0,
                 n_labels: int = 182, ignore_label: int | None = 255, shift_labels: int = 0,
                 onehot: bool = True, segmentation_to_float32: bool = True,
                 keys: Sequence[str] | None = None, key_map: Mapping[str, str] | None = None) -> None:
        check_files_exist(label_paths, f"{type(self).__name__}: label maps")
        transform = ImageTransform(size=size, crop_size=crop_size, random_crop=random_crop, flip_p=flip_p)
        super().__init__(paths, transform, keys=keys, key_map=key_map,
                         loader=load_full_image)
        self.label_paths = list(label_paths)
        self.n_labels, self.ignore_label, self.shift = int(n_labels), ignore_label, int(shift_labels)
        self.onehot = onehot

    def example(self, i: int, img: Image.Image, rng: np.random.Generator | None) -> dict:
        """Jointly transformed image and label map."""
        rng = rng if rng is not None else sample_rng()
        labels = load_label_map(self.label_paths[i])
        if labels.shape != (img.size[1], img.size[0]):
            raise ValueError(f"{self.label_paths[i]}: label map {labels.shape[::-1]} != image {img.size}")
        t = self.transform
        lab = Image.fromarray(labels.astype(np.int32))
        target = t.size or (t.crop_size if t.crop_size and min(img.size) < t.crop_size else None)
        if target:
            scale = target / min(img.size)
            new = (max(target, round(img.size[0] * scale)), max(target, round(img.size[1] * scale)))
            img, lab = img.resize(new, t.resample), lab.resize(new, Image.Resampling.NEAREST)
        if t.crop_size:
            box = crop_box(*img.size, t.crop_size, t.crop_size, rng if t.random_crop else None)
            img, lab = img.crop(box), lab.crop(box)
        if t.flip_p > 0 and rng.random() < t.flip_p:
            img, lab = (x.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for x in (img, lab))
        seg = np.asarray(lab).astype(np.int64)
        valid = seg != self.ignore_label if self.ignore_label is not None else np.ones_like(seg, dtype=bool)
        seg = np.where(valid, seg + self.shift, -1)
        seg[seg >= self.n_labels] = -1
        ex = {"image": to_float(img), "segmentation_labels": seg, "file_path_": self.paths[i]}
        if self.onehot:
            eye = np.concatenate([np.eye(self.n_labels, dtype=np.float32),
                                  np.zeros((1, self.n_labels), dtype=np.float32)])
            ex["segmentation"] = eye[seg]  # index -1 -> the zero row
        return ex


class SemanticFolder(SegmentationPairs):
    """`DATA_ROOT/<image_dir>/**/NAME.*` with label maps `DATA_ROOT/<label_dir>/**/NAME.png`.

    Args:
        data_root: folder with the two subfolders.
        image_dir: subfolder of the images.
        label_dir: subfolder of the label maps.
        **kwargs: as for `SegmentationPairs` (size, crop_size, n_labels, ignore_label, ...).
    """

    def __init__(self, data_root: str = "data/semantic", image_dir: str = "images", label_dir: str = "labels",
                 **kwargs) -> None:
        images, labels = os.path.join(data_root, image_dir), os.path.join(data_root, label_dir)
        paths = list_images(images) if os.path.isdir(images) else []
        if not paths:
            raise missing_data(type(self).__name__, images,
                               f"DATA_ROOT/{image_dir}/**/NAME.jpg with DATA_ROOT/{label_dir}/**/NAME.png")
        label_paths = [os.path.splitext(os.path.join(labels, os.path.relpath(p, images)))[0] + ".png"
                       for p in paths]
        super().__init__(paths, label_paths, **kwargs)


class COCOStuffTrain(SemanticFolder):
    """COCO-Stuff 2017 train: 182 classes, 255 unlabeled (random crops, flips)."""

    def __init__(self, data_root: str = "data/cocostuff", size: int | None = 256, random_crop: bool = True,
                 flip_p: float = 0.5, **kwargs) -> None:
        super().__init__(data_root, "images/train2017", "annotations/train2017", size=size,
                         random_crop=random_crop, flip_p=flip_p, **kwargs)


class COCOStuffValidation(SemanticFolder):
    """COCO-Stuff 2017 validation: 182 classes, 255 unlabeled (centre crops)."""

    def __init__(self, data_root: str = "data/cocostuff", size: int | None = 256, **kwargs) -> None:
        super().__init__(data_root, "images/val2017", "annotations/val2017", size=size, **kwargs)
