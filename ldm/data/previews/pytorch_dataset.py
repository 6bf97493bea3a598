"""`PreviewsTrain` / `PreviewsValidation`, named by the released text2img256 config.

The "previews" text-image data set was internal to the original authors and never released:
both raise a one-line error that points at the caption loaders.
"""
from __future__ import annotations

from typing import Any

from ldm.data.base import unreleased

_USE = ("ldm.data.folder.ImageCaptionFolder / ImageCaptionList, "
        "ldm.data.webdataset.WebDataset (LAION-style shards) or ldm.data.scenes.ScenesTrain")


class PreviewsTrain:
    """Named by the released text2img256 config; the data set was never released."""

    def __init__(self, **kwargs: Any) -> None:
        raise unreleased("ldm.data.previews.pytorch_dataset.PreviewsTrain", "previews text-image", _USE)


class PreviewsValidation:
    """Named by the released text2img256 config; the data set was never released."""

    def __init__(self, **kwargs: Any) -> None:
        raise unreleased("ldm.data.previews.pytorch_dataset.PreviewsValidation", "previews text-image", _USE)
