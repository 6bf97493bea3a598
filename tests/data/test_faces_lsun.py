"""CelebA-HQ / FFHQ (taming's layouts, incl. the .npy arrays) and LSUN (the original's lists)."""
from __future__ import annotations

import numpy as np
import pytest

from ldm.data.base import MissingDataError
from ldm.data.faceshq import CelebAHQTrain, CelebAHQValidation, FFHQTrain, FFHQValidation
from ldm.data.lsun import LSUNBedroomsValidation, LSUNCatsTrain, LSUNChurchesTrain, LSUNChurchesValidation
from ldm.util import instantiate_from_config
from tests.data.layouts import image_array, make_faces, make_lsun, write_image


def test_celebahq_npy_layout_and_taming_alias(tmp_path, monkeypatch):
    make_faces(tmp_path, "celebahq", npy=True, size=(40, 40))
    monkeypatch.chdir(tmp_path)
    train = instantiate_from_config({"target": "taming.data.faceshq.CelebAHQTrain", "params": {"size": 32}})
    assert isinstance(train, CelebAHQTrain) and len(train) == 3
    ex = train[0]
    assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.float32
    assert ex["relative_file_path_"] == "imgHQ00000.npy"
    # the .npy holds the same picture the builder drew: check it is not transposed or scrambled
    ref = image_array((40, 40), 0).astype(np.float32) / 127.5 - 1
    full = CelebAHQValidation(size=None)
    assert len(full) == 2 and np.allclose(CelebAHQTrain(size=None)[0]["image"], ref, atol=1e-6)


def test_ffhq_png_layout_keys_and_crop(tmp_path, monkeypatch):
    make_faces(tmp_path, "ffhq", size=(48, 48))
    monkeypatch.chdir(tmp_path)
    ds = FFHQTrain(size=40, crop_size=32, flip_p=0.5, keys=["image"])
    assert list(ds[0]) == ["image"] and ds[0]["image"].shape == (32, 32, 3)
    val = FFHQValidation(size=24, coord=True)
    ex = val[1]
    assert ex["coord"].shape == (24, 24, 2) and ex["coord"].max() == 1.0


def test_faces_split_folders_without_list_files(tmp_path):
    for split in ("train", "val"):
        write_image(tmp_path / "faces" / split / "0.png")
    assert len(FFHQValidation(data_root=str(tmp_path / "faces"), list_file=str(tmp_path / "none.txt"))) == 1


def test_faces_missing_data_names_the_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingDataError, match=r"data/celebahqtrain\.txt.*expected layout"):
        CelebAHQTrain(size=256)


def test_faces_list_naming_missing_files(tmp_path, monkeypatch):
    make_faces(tmp_path, "ffhq")
    (tmp_path / "data" / "ffhqtrain.txt").write_text("00000.png\nmissing_a.png\nmissing_b.png\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingDataError, match=r"2 missing file.*missing_a\.png"):
        FFHQTrain()


def test_lsun_lists_crop_resize_and_flip(tmp_path, monkeypatch):
    make_lsun(tmp_path, "churches", "church_outdoor")
    make_lsun(tmp_path, "bedrooms", "bedrooms")
    make_lsun(tmp_path, "cats", "cat")
    monkeypatch.chdir(tmp_path)
    train, val = LSUNChurchesTrain(size=32), LSUNChurchesValidation(size=32)
    assert (len(train), len(val)) == (2, 1) and train.transform.flip_p == 0.5 and val.transform.flip_p == 0.0
    ex = val[0]
    assert ex["image"].shape == (32, 32, 3) and ex["relative_file_path_"] == "img2.webp"
    # centre square crop then resize: the 60x40 picture's middle 40x40 at native size
    native = LSUNChurchesValidation(size=None)[0]["image"]
    ref = image_array((60, 40), 2)[:, 10:50].astype(np.float32) / 127.5 - 1
    assert native.shape == (40, 40, 3) and np.allclose(native, ref, atol=1e-6)  # lossless webp
    assert LSUNBedroomsValidation(size=16)[0]["image"].shape == (16, 16, 3)
    assert LSUNCatsTrain(size=16, interpolation="lanczos", flip_p=1.0)[1]["image"].shape == (16, 16, 3)


def test_lsun_missing_list(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingDataError, match="church_outdoor_train.txt"):
        LSUNChurchesTrain(size=256)
