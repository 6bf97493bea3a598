"""ImageNet (synsets, labels, layouts) and super-resolution pairs with every degradation."""
from __future__ import annotations

import numpy as np
import pytest

from ldm.data.degradations import anisotropic_gaussian, fspecial_gaussian, get_degradation
from ldm.data.imagenet import ImageNetSRTrain, ImageNetSRValidation, ImageNetTrain, ImageNetValidation, str_to_indices
from ldm.util import ConfigError
from tests.data.layouts import HUMAN, SYNSETS, image_array, make_imagenet


def test_imagenet_labels_from_synset_folders(tmp_path, monkeypatch):
    make_imagenet(tmp_path)
    monkeypatch.chdir(tmp_path)
    ds = ImageNetTrain(config={"size": 32})
    assert len(ds) == 6 and ds.transform.random_crop
    ex = ds[5]
    assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.float32
    assert ex["synsets"] == SYNSETS[2] and ex["class_label"] == 2 and ex["human_label"] == HUMAN[SYNSETS[2]]
    assert ex["relpath"].startswith(SYNSETS[2] + "/")
    sub = ImageNetValidation(config={"size": 16, "sub_indices": "1-2"})
    assert sorted({sub[i]["synsets"] for i in range(len(sub))}) == list(SYNSETS[1:])
    assert not sub.transform.random_crop


def test_imagenet_flat_validation_with_synset_file(tmp_path):
    make_imagenet(tmp_path, flat_val=True)
    ds = ImageNetValidation(data_root=str(tmp_path / "data" / "imagenet" / "val"), size=16)
    assert [ds[i]["class_label"] for i in range(len(ds))] == [0, 0, 1, 1, 2, 2]


def test_str_to_indices():
    assert str_to_indices("0-2,7, 9-10") == [0, 1, 2, 7, 9, 10]


@pytest.mark.parametrize("name", ["bsrgan", "bsrgani", "bsrgan_light", "pil_nearest", "pil_bicubic",
                                  "cv_area", "cv_bicubic", "bicubic", "bilinear", "area", "lanczos"])
def test_degradations_give_uint8_low_resolution(name):
    img = image_array((64, 64), 3)
    rng = np.random.default_rng(0)
    lr = get_degradation(name, 4)(img, rng)
    assert lr.dtype == np.uint8 and lr.shape == (16, 16, 3)
    assert abs(lr.astype(float).mean() - img.astype(float).mean()) < 25  # same picture, smaller


def test_degradation_is_deterministic_for_a_seed_and_unknown_names_fail():
    img = image_array((32, 32), 1)
    a = get_degradation("bsrgan_light", 4)(img, np.random.default_rng(5))
    b = get_degradation("bsrgan_light", 4)(img, np.random.default_rng(5))
    assert np.array_equal(a, b)
    with pytest.raises(ConfigError, match="degradation 'blurry' unknown"):
        get_degradation("blurry", 4)


def test_blur_kernels_are_normalized():
    assert np.isclose(fspecial_gaussian(7, 1.2).sum(), 1.0)
    k = anisotropic_gaussian(15, 0.3, 4.0, 1.0)
    assert np.isclose(k.sum(), 1.0) and k.shape == (15, 15) and not np.allclose(k, k.T)


def test_imagenet_sr_pairs(tmp_path, monkeypatch):
    make_imagenet(tmp_path, size=(96, 72))
    monkeypatch.chdir(tmp_path)
    train = ImageNetSRTrain(size=32, degradation="pil_nearest")
    ex = train[0]
    assert ex["image"].shape == (32, 32, 3) and ex["LR_image"].shape == (8, 8, 3)
    assert ex["LR_image"].dtype == np.float32 and -1 <= ex["LR_image"].min() and ex["LR_image"].max() <= 1
    assert "class_label" in ex
    val = ImageNetSRValidation(size=32, degradation="bsrgan_light", downscale_f=4)
    first, again = val[2], val[2]
    assert np.array_equal(first["image"], again["image"]) and np.array_equal(first["LR_image"], again["LR_image"])
    np.savetxt(tmp_path / "idx.txt", [1, 3], fmt="%d")
    assert len(ImageNetSRTrain(size=32, indices_file=str(tmp_path / "idx.txt"))) == 2
    with pytest.raises(ConfigError, match="multiple of downscale_f"):
        ImageNetSRTrain(size=30, downscale_f=4)
