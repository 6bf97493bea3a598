"""The feature-extractor interface that FID, KID, IS and precision/recall share.

A feature extractor is an `nn.Module` that maps a batch of uint8 RGB images `[B, 3, H, W]`
(values 0..255, any size) to a dict with `"features"` `[B, D]` (the embedding FID/KID/PR use)
and, when it can classify, `"logits"` `[B, K]` (what the Inception Score uses). Each extractor
does its own resizing and normalisation, so that every metric sees the same preprocessing.
Extractors are chosen by name (`build_feature_extractor("inception-v3-compat")`) or by an
import path, which makes other networks pluggable without touching the metrics.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

# Registered names -> import paths (kept as strings so that nothing heavy is imported early).
FEATURE_EXTRACTORS: dict[str, str] = {
    "inception-v3-compat": "ldm.eval.inception.InceptionV3FeatureExtractor",
    "pixels": "ldm.eval.features.PixelFeatureExtractor",
}
FEATURE_EXTRACTOR_ALIASES: dict[str, str] = {"inception": "inception-v3-compat", "stub": "pixels"}


class FeatureExtractor(nn.Module, ABC):
    """Maps uint8 images [B, 3, H, W] to {"features": [B, D], "logits": [B, K] (optional)}."""

    #: short name written into cached statistics, so that stats of different networks never mix
    name: str = "feature-extractor"
    #: dimensionality D of "features"
    feature_dim: int = 0
    #: whether "logits" are produced (needed by the Inception Score)
    provides_logits: bool = False

    @abstractmethod
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the features (and logits, if provided) of a uint8 batch."""


class PixelFeatureExtractor(FeatureExtractor):
    """A cheap, deterministic stand-in: area-downsampled pixels and a fixed random classifier.

    Not a perceptual metric. It exists so that the pipeline (CLI, caching, callback) can be
    exercised without the Inception weights, e.g. in tests and smoke runs.
    """

    name = "pixels"
    provides_logits = True

    def __init__(self, size: int = 8, num_classes: int = 10, seed: int = 0) -> None:
        """`size`: side of the downsampled image; `num_classes`: width of the random logits."""
        super().__init__()
        self.size = size
        self.feature_dim = 3 * size * size
        generator = torch.Generator().manual_seed(seed)
        projection = torch.randn(self.feature_dim, num_classes, generator=generator)
        self.register_buffer("projection", projection / self.feature_dim ** 0.5)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = check_uint8_batch(images).float() / 127.5 - 1.0
        x = nn.functional.adaptive_avg_pool2d(x, self.size).flatten(1)
        return {"features": x, "logits": x @ self.projection}


def check_uint8_batch(images: torch.Tensor) -> torch.Tensor:
    """Raise a one-line ValueError unless `images` is a uint8 [B, 3, H, W] tensor."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 image tensor, got {getattr(images, 'dtype', type(images))}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
    return images


def build_feature_extractor(name: str = "inception-v3-compat", **kwargs: Any) -> FeatureExtractor:
    """Build a registered extractor by name, or any FeatureExtractor class by import path."""
    from ldm.util import get_obj_from_str

    name = FEATURE_EXTRACTOR_ALIASES.get(name, name)
    target = FEATURE_EXTRACTORS.get(name, name)
    if "." not in target:
        known = ", ".join(sorted(FEATURE_EXTRACTORS))
        raise ValueError(f"unknown feature extractor '{name}' (known: {known}, or an import path)")
    try:
        cls = get_obj_from_str(target)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import feature extractor '{target}' ({err})") from err
    extractor = cls(**kwargs)
    if not isinstance(extractor, FeatureExtractor):
        raise ValueError(f"'{target}' is not a ldm.eval.features.FeatureExtractor")
    return extractor.eval()


@torch.no_grad()
def extract_features(batches: Iterable[torch.Tensor], extractor: FeatureExtractor,
                     device: str | torch.device = "cpu",
                     max_samples: int | None = None) -> dict[str, np.ndarray]:
    """Run `extractor` over uint8 batches; returns float32 arrays "features" (and "logits")."""
    extractor = extractor.to(device).eval()
    outputs: dict[str, list[np.ndarray]] = {}
    seen = 0
    for batch in batches:
        if max_samples is not None and seen >= max_samples:
            break
        if max_samples is not None:
            batch = batch[: max_samples - seen]
        result = extractor(check_uint8_batch(batch).to(device))
        for key, value in result.items():
            outputs.setdefault(key, []).append(value.detach().float().cpu().numpy())
        seen += len(batch)
        logger.debug("extracted features of %d images", seen)
    if seen == 0:
        raise ValueError("no images to extract features from")
    return {key: np.concatenate(values, axis=0) for key, values in outputs.items()}
