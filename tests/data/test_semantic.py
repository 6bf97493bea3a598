"""Semantic synthesis pairs: label maps one-hot, transformed together with their images."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ldm.data.base import MissingDataError, UnreleasedDatasetError
from ldm.data.landscapes import LandscapesExamples, RFWTrain, RFWValidation
from ldm.data.semantic import COCOStuffTrain, COCOStuffValidation, SemanticFolder


def _pair(images, labels, name: str, w: int = 40, h: int = 30, seed: int = 0) -> None:
    """An image whose red channel encodes the label of each pixel (so alignment can be checked)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.uint8)
    lab[:, w // 2:] = 3
    lab[h // 2:, :10] = 255  # unlabeled
    lab[0:5, 0:5] = rng.integers(0, 5)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.where(lab == 255, 250, lab * 40)
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(images / f"{name}.png")
    Image.fromarray(lab).save(labels / f"{name}.png")


def _check_alignment(ex: dict, n_labels: int) -> None:
    seg, img = ex["segmentation_labels"], ex["image"]
    red = np.rint((img[..., 0] + 1) * 127.5)
    assert np.all(red[seg == -1] == 250) and np.all(red[seg >= 0] == seg[seg >= 0] * 40)
    onehot = ex["segmentation"]
    assert onehot.shape == seg.shape + (n_labels,) and onehot.dtype == np.float32
    assert np.all(onehot.sum(-1)[seg == -1] == 0) and np.all(onehot.sum(-1)[seg >= 0] == 1)
    assert np.all(onehot.argmax(-1)[seg >= 0] == seg[seg >= 0])


def test_semantic_folder_keeps_image_and_labels_aligned(tmp_path):
    for i in range(2):
        _pair(tmp_path / "images", tmp_path / "labels", f"p{i}", seed=i)
    ds = SemanticFolder(str(tmp_path), size=None, crop_size=24, random_crop=True, flip_p=0.5, n_labels=182)
    for i in range(len(ds)):
        for _ in range(4):
            ex = ds[i]
            assert ex["image"].shape == (24, 24, 3)
            _check_alignment(ex, 182)
    shifted = SemanticFolder(str(tmp_path), size=24, n_labels=5, shift_labels=1)[0]
    assert shifted["segmentation_labels"].max() == 4  # label 3 -> 4


def test_semantic_folder_missing_label_map(tmp_path):
    _pair(tmp_path / "images", tmp_path / "labels", "a")
    Image.new("RGB", (10, 10)).save(tmp_path / "images" / "b.png")
    with pytest.raises(MissingDataError, match=r"1 missing file.*b\.png"):
        SemanticFolder(str(tmp_path))


def test_cocostuff_layout(tmp_path, monkeypatch):
    for split in ("train2017", "val2017"):
        base = tmp_path / "data" / "cocostuff"
        _pair(base / "images" / split, base / "annotations" / split, "000000000001")
    monkeypatch.chdir(tmp_path)
    ex = COCOStuffTrain(size=16)[0]
    assert ex["segmentation"].shape == (16, 16, 182)
    _check_alignment(COCOStuffValidation(size=None, crop_size=None)[0], 182)


def test_landscapes_layout_and_unreleased_rfw(tmp_path, monkeypatch):
    _pair(tmp_path / "data/sflckr_images/x", tmp_path / "data/sflckr_segmentations/x", "im")
    (tmp_path / "data/sflckr_examples.txt").write_text("x/im.png\n")
    monkeypatch.chdir(tmp_path)
    ex = LandscapesExamples(size=20, crop_size=16)[0]
    assert ex["segmentation"].shape == (16, 16, 182)
    for cls in (RFWTrain, RFWValidation):
        with pytest.raises(UnreleasedDatasetError) as err:
            cls(size=768, crop_size=512, segmentation_to_float32=True)
        assert "never released" in str(err.value) and "SemanticFolder" in str(err.value)
