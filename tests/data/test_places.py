"""Places365-Standard lists (the inpainting benchmark's data) and super-resolution from a folder."""
from __future__ import annotations

import numpy as np
import pytest

from ldm.data.base import MissingDataError
from ldm.data.places import PlacesTrain, PlacesValidation
from ldm.data.superres import SuperresFolder
from tests.data.layouts import make_places, write_image


def test_places_lists_and_labels(tmp_path, monkeypatch):
    make_places(tmp_path)
    monkeypatch.chdir(tmp_path)
    train, val = PlacesTrain(size=32), PlacesValidation(size=32)
    assert len(train) == 2 and len(val) == 2 and train.transform.random_crop and not val.transform.random_crop
    ex = val[1]
    assert ex["image"].shape == (32, 32, 3) and ex["class_label"] == 0 and ex["human_label"] == "airfield"
    with pytest.raises(MissingDataError, match="places365_train_standard.txt"):
        PlacesTrain(data_root=str(tmp_path / "elsewhere"))


def test_superres_folder_pairs(tmp_path):
    for i in range(2):
        write_image(tmp_path / f"{i}.png", (80, 70), i)
    ds = SuperresFolder(str(tmp_path), size=32, degradation="bicubic", deterministic=True)
    ex = ds[0]
    assert ex["image"].shape == (32, 32, 3) and ex["LR_image"].shape == (8, 8, 3)
    # the LR copy is the HR image downscaled: their means agree
    assert abs(float(ex["image"].mean()) - float(ex["LR_image"].mean())) < 0.05
    assert np.array_equal(ds[0]["LR_image"], ex["LR_image"])
