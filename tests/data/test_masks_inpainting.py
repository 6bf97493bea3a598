"""LaMa-style masks (incl. the 40-50% hard setting) and the inpainting wrapper."""
from __future__ import annotations

import numpy as np
import pytest

from ldm.data.inpainting import InpaintingDataset
from ldm.data.masks import KINDS, MaskGenerator
from ldm.util import ConfigError
from tests.data.layouts import write_image


@pytest.mark.parametrize("kind", KINDS)
def test_mask_kinds_are_binary_and_nonempty(kind):
    for seed in range(3):
        m = MaskGenerator(kind)(64, 48, np.random.default_rng(seed))
        assert m.shape == (64, 48) and m.dtype == np.float32
        assert set(np.unique(m)) <= {0.0, 1.0} and 0 < m.mean() < 1


def test_thin_masks_cover_less_than_thick_ones():
    rng = np.random.default_rng(0)
    thin = np.mean([MaskGenerator("thin")(128, 128, rng).mean() for _ in range(20)])
    thick = np.mean([MaskGenerator("thick")(128, 128, rng).mean() for _ in range(20)])
    assert thin < thick


def test_hard_masks_cover_40_to_50_percent():
    gen = MaskGenerator("hard")
    cover = [gen(s, s, np.random.default_rng(seed)).mean() for seed in range(12) for s in (32, 96)]
    assert min(cover) >= 0.4 and max(cover) <= 0.5
    custom = MaskGenerator("thin", min_coverage=0.1, max_coverage=0.2)(64, 64, np.random.default_rng(1)).mean()
    assert 0.1 <= custom <= 0.2


def test_masks_are_deterministic_for_a_seed():
    a = MaskGenerator("mixed")(40, 40, np.random.default_rng(9))
    b = MaskGenerator("mixed")(40, 40, np.random.default_rng(9))
    assert np.array_equal(a, b)
    with pytest.raises(ConfigError, match="mask kind"):
        MaskGenerator("spiral")


def test_inpainting_wrapper_from_config(tmp_path):
    for i in range(2):
        write_image(tmp_path / f"{i}.png", (40, 40), i)
    cfg = {"target": "ldm.data.folder.ImageFolder", "params": {"data_root": str(tmp_path), "size": 32}}
    val = InpaintingDataset(cfg, mask_kind="box", deterministic=True, seed=4)
    ex = val[1]
    assert ex["mask"].shape == (32, 32, 1) and ex["masked_image"].shape == (32, 32, 3)
    hole = ex["mask"][..., 0] > 0.5
    assert np.all(ex["masked_image"][hole] == -1.0)
    assert np.array_equal(ex["masked_image"][~hole], ex["image"][~hole])
    assert np.array_equal(val[1]["mask"], ex["mask"]) and not np.array_equal(val[0]["mask"], ex["mask"])
    train = InpaintingDataset(cfg, mask_kind="thick", key_map={"image": "jpg"})
    assert {"jpg", "mask", "masked_image"} <= set(train[0])
