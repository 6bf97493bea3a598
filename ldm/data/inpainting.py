"""Inpainting pairs: any image data set plus on-the-fly LaMa-style masks.

Adds to each sample of the wrapped data set:
- `mask`: (H, W, 1) float32, 1 where the model must fill in;
- `masked_image`: the image with the holes set to `fill_value` (-1, black, as the released
  `inpainting_big` model and `scripts/inpaint.py` of the original expect).

Validation sets use `deterministic=True`: the mask of sample i depends only on (seed, i), so every
evaluation sees the same holes.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ldm.data.base import sample_rng, select_keys
from ldm.data.masks import MaskGenerator
from ldm.util import instantiate_from_config


class InpaintingDataset(Dataset):
    """Wraps an image data set (object or `{target, params}` config) and adds masks.

    Args:
        dataset: the image data set, or its config node.
        mask_kind: `thin`, `medium`, `thick`, `box`, `mixed` (LaMa training) or `hard` (40-50%).
        min_coverage: optional lower bound of the masked fraction.
        max_coverage: optional upper bound of the masked fraction.
        deterministic: mask of sample i fixed by (seed, i) (use for validation).
        seed: seed of the deterministic masks.
        fill_value: value of masked pixels in `masked_image` (image range is [-1, 1]).
        image_key: key of the image in the wrapped data set's samples.
        keys: if given, only these keys are returned.
        key_map: renames of returned keys.
    """

    def __init__(self, dataset: Dataset | Mapping[str, Any], mask_kind: str = "mixed",
                 min_coverage: float | None = None, max_coverage: float | None = None,
                 deterministic: bool = False, seed: int = 0, fill_value: float = -1.0,
                 image_key: str = "image", keys: list[str] | None = None,
                 key_map: dict[str, str] | None = None) -> None:
        self.dataset = instantiate_from_config(dataset) if isinstance(dataset, Mapping) else dataset
        self.masks = MaskGenerator(mask_kind, min_coverage, max_coverage)
        self.deterministic = deterministic
        self.seed = seed
        self.fill_value = float(fill_value)
        self.image_key = image_key
        self.keys = keys
        self.key_map = key_map

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        example = dict(self.dataset[i])
        image = example[self.image_key]
        rng = np.random.default_rng([self.seed, i]) if self.deterministic else sample_rng()
        mask = self.masks(image.shape[0], image.shape[1], rng)[..., None]
        example["mask"] = mask
        example["masked_image"] = np.where(mask > 0.5, np.float32(self.fill_value), image).astype(np.float32)
        return select_keys(example, self.keys, self.key_map)
