"""Landscapes for semantic synthesis: taming's public S-FLCKR-style layout, and the unreleased RFW.

`LandscapesExamples` reads taming-transformers' landscape layout: a list file
(`data/sflckr_examples.txt`, image paths relative to `data/sflckr_images`) and label maps at the
same relative paths with `.png` under `data/sflckr_segmentations` (182 COCO-Stuff classes, as
predicted by a segmentation network).

`RFWTrain` / `RFWValidation` are named by the released `semantic_synthesis512` config; that data
set was internal and never released, so they raise a one-line error pointing at the folder loaders.
"""
from __future__ import annotations

import os
from typing import Any

from ldm.data.base import missing_data, read_list_file, unreleased
from ldm.data.semantic import SegmentationPairs

_USE = "ldm.data.semantic.SemanticFolder (image + label-map folders) or ldm.data.landscapes.LandscapesExamples"


class LandscapesExamples(SegmentationPairs):
    """Landscape images with label maps in taming's sflckr layout.

    Args:
        data_csv: list of image paths relative to `data_root`.
        data_root: folder of the images.
        segmentation_root: folder of the label maps (same relative paths, `.png`).
        **kwargs: as for `SegmentationPairs` (size, crop_size, random_crop, flip_p, n_labels, ...).
    """

    def __init__(self, data_csv: str = "data/sflckr_examples.txt", data_root: str = "data/sflckr_images",
                 segmentation_root: str = "data/sflckr_segmentations", **kwargs: Any) -> None:
        if not os.path.isfile(data_csv):
            raise missing_data(type(self).__name__, data_csv,
                               f"a list of images relative to '{data_root}', label maps under '{segmentation_root}'")
        rel = read_list_file(data_csv)
        super().__init__([os.path.join(data_root, r) for r in rel],
                         [os.path.join(segmentation_root, os.path.splitext(r)[0] + ".png") for r in rel], **kwargs)


class RFWTrain:
    """Named by the released semantic_synthesis512 config; the data set was never released."""

    def __init__(self, **kwargs: Any) -> None:
        raise unreleased("ldm.data.landscapes.RFWTrain", "RFW landscapes", _USE)


class RFWValidation:
    """Named by the released semantic_synthesis512 config; the data set was never released."""

    def __init__(self, **kwargs: Any) -> None:
        raise unreleased("ldm.data.landscapes.RFWValidation", "RFW landscapes", _USE)
