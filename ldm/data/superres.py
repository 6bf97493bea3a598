"""Super-resolution pairs over any image list: `image` at `size` and its degraded `LR_image`.

As the original ImageNetSR: a square crop whose side is a random fraction in
[min_crop_f, max_crop_f] of the shorter side (random or centred), resized to size x size (area
filter when shrinking), then degraded to size / downscale_f by `degradation` (see
`ldm.data.degradations`). Validation sets can fix crops and degradations per index.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ldm.data.base import (ImagePaths, ImageTransform, WarnCounter, crop_box, list_images, missing_data, sample_rng,
                           to_float)
from ldm.data.degradations import get_degradation
from ldm.util import ConfigError


class SuperresPaths(ImagePaths):
    """(image, LR_image) pairs from image files.

    Args:
        paths: image files.
        size: side of the high-resolution `image`.
        degradation: `bsrgan`, `bsrgan_light`, `pil_nearest`, `bicubic`, ... (see degradations).
        downscale_f: size / LR size.
        min_crop_f: smallest crop side as a fraction of the image's shorter side.
        max_crop_f: largest crop side as a fraction of the image's shorter side.
        random_crop: random crop position (else centred).
        deterministic: crop and degradation of sample i fixed by (seed, i) (for validation).
        seed: seed of the deterministic pairs.
        labels, keys, key_map, loader: as for `ImagePaths`.
    """

    def __init__(self, paths: Sequence[str], size: int = 256, degradation: str | None = "bsrgan_light",
                 downscale_f: int = 4, min_crop_f: float = 0.5, max_crop_f: float = 1.0,
                 random_crop: bool = True, deterministic: bool = False, seed: int = 0,
                 labels: Mapping[str, Sequence[Any]] | None = None, keys: Sequence[str] | None = None,
                 key_map: Mapping[str, str] | None = None,
                 loader: Callable[[str, int | None], Image.Image] | None = None) -> None:
        if not size or size % downscale_f:
            raise ConfigError(f"super-resolution size {size} must be a multiple of downscale_f {downscale_f}")
        if not 0 < min_crop_f <= max_crop_f <= 1:
            raise ConfigError(f"need 0 < min_crop_f ({min_crop_f}) <= max_crop_f ({max_crop_f}) <= 1")
        super().__init__(paths, ImageTransform(), labels=labels, keys=keys, key_map=key_map, loader=loader)
        self.size = int(size)
        self.lr_size = self.size // int(downscale_f)
        self.degrade = get_degradation(degradation, int(downscale_f))
        self.min_crop_f, self.max_crop_f = float(min_crop_f), float(max_crop_f)
        self.random_crop = random_crop
        self.deterministic = deterministic
        self.seed = seed
        self.upscaled = WarnCounter("image smaller than the super-resolution crop, resized up")

    def load(self, i: int) -> Image.Image:
        """Decode at no less than the resolution the smallest crop needs."""
        return self.loader(self.paths[i], math.ceil(self.size / self.min_crop_f))

    def example(self, i: int, img: Image.Image, rng: np.random.Generator | None) -> dict:
        """Crop, resize and degrade one image."""
        rng = np.random.default_rng([self.seed, i]) if self.deterministic else (rng or sample_rng())
        w, h = img.size
        side = max(1, int(min(w, h) * rng.uniform(self.min_crop_f, self.max_crop_f)))
        img = img.crop(crop_box(w, h, side, side, rng if self.random_crop else None))
        if side < self.size:
            self.upscaled(f"{self.paths[i]}: crop of {side} px for size {self.size}")
        if side != self.size:
            resample = Image.Resampling.BOX if side > self.size else Image.Resampling.BICUBIC
            img = img.resize((self.size, self.size), resample=resample)
        image8 = np.asarray(img)
        lr = self.degrade(image8, rng)
        if lr.shape[:2] != (self.lr_size, self.lr_size):
            lr = np.asarray(Image.fromarray(lr).resize((self.lr_size, self.lr_size), Image.Resampling.BICUBIC))
        ex = {k: v[i] for k, v in self.labels.items()}
        ex.update(file_path_=self.paths[i], image=to_float(image8), LR_image=to_float(lr))
        return ex


class SuperresFolder(SuperresPaths):
    """Super-resolution pairs from your own image folder (recursive).

    Args:
        data_root: the folder.
        size, degradation, downscale_f, min_crop_f, max_crop_f, random_crop, deterministic, seed,
        keys, key_map: as for `SuperresPaths`.
    """

    def __init__(self, data_root: str = "data/images", size: int = 256, degradation: str | None = "bsrgan_light",
                 downscale_f: int = 4, min_crop_f: float = 0.5, max_crop_f: float = 1.0,
                 random_crop: bool = True, deterministic: bool = False, seed: int = 0,
                 keys: Sequence[str] | None = None, key_map: Mapping[str, str] | None = None) -> None:
        paths = list_images(data_root) if os.path.isdir(data_root) else []
        if not paths:
            raise missing_data(type(self).__name__, data_root, "an image folder: DATA_ROOT/**/*.{png,jpg,jpeg,webp}")
        super().__init__(paths, size=size, degradation=degradation, downscale_f=downscale_f, min_crop_f=min_crop_f,
                         max_crop_f=max_crop_f, random_crop=random_crop, deterministic=deterministic, seed=seed,
                         keys=keys, key_map=key_map)
