"""Objects-bbox tokens (taming's builder), and the COCO / OpenImages layout loaders."""
from __future__ import annotations

import numpy as np
import pytest

from ldm.data.coco import COCOBBoxTrain, COCOBBoxValidation, COCOCaptionsTrain, COCOCaptionsValidation
from ldm.data.layout import Annotation, ObjectsBoundingBoxConditionalBuilder
from ldm.data.openimages import (FullOpenImagesTrain, OpenImagesBBoxTrain, OpenImagesBBoxValidation,
                                 SuperresOpenImagesAdvancedValidation)
from ldm.util import ConfigError
from tests.data.layouts import make_coco, make_openimages


def test_builder_tokens_follow_taming():
    b = ObjectsBoundingBoxConditionalBuilder(no_object_classes=5, no_max_objects=3, no_tokens=16,
                                             encode_crop=False, use_group_parameter=True)
    assert b.no_sections == 4 and b.none == 15 and b.embedding_dim == 9
    # the docstring example of taming: (2/3, 1/3) -> token 6, (1, 1) -> token 15
    assert b.tokenize_coordinates(2 / 3, 1 / 3) == 6 and b.tokenize_coordinates(1, 1) == 15
    tokens, kept = b.build([Annotation((0.0, 0.0, 1 / 3, 2 / 3), 4, is_group_of=True)])
    assert tokens == [4 + 5, 0, 1 + 2 * 4] + [15] * 6 and len(kept) == 1
    assert b.coordinates_from_token(9) == (1 / 3, 2 / 3)


def test_builder_crop_and_flip():
    b = ObjectsBoundingBoxConditionalBuilder(5, 2, 100, encode_crop=False, use_group_parameter=False)
    ann = [Annotation((0.5, 0.0, 0.5, 0.5), 1), Annotation((0.0, 0.6, 0.2, 0.2), 2)]
    tokens, kept = b.build(ann, crop=(0.5, 0.0, 0.5, 1.0))  # right half: only the first object
    assert len(kept) == 1 and kept[0].bbox == (0.0, 0.0, 1.0, 0.5) and tokens[3:] == [99, 99, 99]
    _, flipped = b.build(ann[:1], flip=True)
    assert flipped[0].bbox[0] == 0.0  # mirrored to the left side


def test_released_layout_vocabulary():
    b = ObjectsBoundingBoxConditionalBuilder(601, 30, 8192, encode_crop=True, use_group_parameter=True)
    assert b.embedding_dim == 92 and b.none == 8191  # the layout2img-openimages256 BERT: 92 tokens, 8192
    with pytest.raises(ConfigError, match="vocabulary too small"):
        ObjectsBoundingBoxConditionalBuilder(601, 30, 8192, use_additional_parameters=True)


def test_coco_layout_loader(tmp_path, monkeypatch):
    make_coco(tmp_path)
    monkeypatch.chdir(tmp_path)
    ds = COCOBBoxValidation(size=32, no_tokens=1024, no_max_objects=4)
    ex = ds[0]
    assert ex["image"].shape == (32, 32, 3) and ex["coordinates_bbox"].shape == (12,)
    assert ex["coordinates_bbox"].dtype == np.int64 and ds.category_names == ["person", "dog"]
    labels = ex["bbox_labels"]
    assert sorted(labels[labels >= 0].tolist()) == [0, 1]
    # object tokens: person (0), dog (1) + 2 (iscrowd -> group flag)
    assert sorted(ex["coordinates_bbox"][[0, 3]].tolist()) == [0, 1 + 2]
    assert np.all(ex["bboxes"][2:] == 0) and np.all((ex["bboxes"] >= 0) & (ex["bboxes"] <= 1))
    train = COCOBBoxTrain(size=32)
    assert len(train) == 3 and train[1]["coordinates_bbox"].shape == (90,)
    caps = COCOCaptionsTrain(size=16)
    assert caps[0]["caption"] in {"caption 0 of image 0", "caption 1 of image 0"}
    assert COCOCaptionsValidation(size=16)[2]["caption"] == "caption 0 of image 2"


def test_openimages_loaders(tmp_path, monkeypatch):
    make_openimages(tmp_path)
    monkeypatch.chdir(tmp_path)
    ds = OpenImagesBBoxValidation(size=32)
    ex = ds[0]
    assert ex["coordinates_bbox"].shape == (92,) and ex["coordinates_bbox"].max() <= 8191
    assert ds.category_names == ["Cat", "Dog", "Tree"]
    assert sorted(ex["coordinates_bbox"][[0, 3]].tolist()) == [2, 0 + 3]  # Tree (2), Cat (0) as a group (+3 classes)
    allow = OpenImagesBBoxTrain(size=32, category_allow_list=["Tree"], min_objects_per_image=1)
    assert allow.category_names == ["Tree"] and allow[0]["bbox_labels"].tolist()[:2] == [0, -1]
    full = FullOpenImagesTrain(size=48, crop_size=32)
    assert full[0]["image"].shape == (32, 32, 3)
    sr = SuperresOpenImagesAdvancedValidation(size=32, degradation="bsrgan_light")
    assert sr[0]["LR_image"].shape == (8, 8, 3)
