"""The built-in scenes: determinism, splits, and captions that agree with boxes and segmentation."""
from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DataLoader

from ldm.data.scene_render import COLORS, SHAPES
from ldm.data.scenes import (NUM_CLASSES, NUM_SEGMENTATION_CLASSES, RELATIONS, Scenes, ScenesTrain, ScenesValidation,
                             caption_in_holdout, class_label_of, human_label_of, parse_caption, relation_between)
from ldm.util import ConfigError, instantiate_from_config

EXPECTED = {
    "image": ((32, 32, 3), np.float32), "mask": ((32, 32, 1), np.float32),
    "masked_image": ((32, 32, 3), np.float32), "LR_image": ((8, 8, 3), np.float32),
    "segmentation": ((32, 32, NUM_SEGMENTATION_CLASSES), np.float32),
    "segmentation_labels": ((32, 32), np.int64), "instance_map": ((32, 32), np.int64),
    "bboxes": ((3, 4), np.float32), "bbox_labels": ((3,), np.int64), "coordinates_bbox": ((9,), np.int64),
}


def test_sample_keys_shapes_dtypes_and_ranges():
    ds = ScenesTrain(size=32, num_samples=50)
    ex = ds[3]
    for key, (shape, dtype) in EXPECTED.items():
        assert ex[key].shape == shape and ex[key].dtype == dtype, key
    for key in ("image", "masked_image", "LR_image"):
        assert -1.0 <= ex[key].min() and ex[key].max() <= 1.0
    assert isinstance(ex["caption"], str) and 0 <= ex["class_label"] < NUM_CLASSES == 36
    assert ex["human_label"] == human_label_of(ex["class_label"]) and 1 <= ex["num_objects"] <= 3
    assert set(np.unique(ex["mask"])) == {0.0, 1.0}
    assert np.all(ex["masked_image"][ex["mask"][..., 0] > 0.5] == -1.0)
    assert np.all(ex["coordinates_bbox"] < 1024)


def test_deterministic_per_seed_and_index_at_any_resolution():
    a, b = Scenes(size=32, seed=7), Scenes(size=32, seed=7)
    for i in (0, 5, 19):
        assert np.array_equal(a[i]["image"], b[i]["image"]) and a[i]["caption"] == b[i]["caption"]
    big = Scenes(size=64, seed=7)[5]
    assert big["caption"] == a[5]["caption"] and np.array_equal(big["bboxes"], a[5]["bboxes"])
    assert Scenes(size=32, seed=8)[5]["caption"] != a[5]["caption"] or not np.array_equal(
        Scenes(size=32, seed=8)[5]["image"], a[5]["image"])


def test_fixed_disjoint_splits_with_held_out_captions():
    train, val = ScenesTrain(size=16, num_samples=300), ScenesValidation(size=16, num_samples=300)
    assert len(train) == 300 and len(ScenesValidation(size=16)) == 1000
    train_caps = [train.scene(i).caption for i in range(300)]
    val_caps = [val.scene(i).caption for i in range(300)]
    multi = [c for c in val_caps if len(parse_caption(c)[0]) > 1]
    assert multi and all(caption_in_holdout(c, 0.1) for c in multi)
    assert not any(caption_in_holdout(c, 0.1) for c in train_caps if len(parse_caption(c)[0]) > 1)
    assert not set(multi) & set(train_caps)


def test_captions_agree_with_boxes_segmentation_and_colours():
    ds = Scenes(size=64, num_samples=40, seed=1)
    counts = {1: 0, 2: 0, 3: 0}
    for i in range(len(ds)):
        ex, scene = ds[i], ds.scene(i)
        objects, relations = parse_caption(ex["caption"])
        counts[len(objects)] += 1
        assert [(o.color, o.shape) for o in scene.objects] == objects
        assert ex["class_label"] == class_label_of(*objects[0]) and ex["num_objects"] == len(objects)
        boxes = ex["bboxes"][: len(objects)]
        assert ex["bbox_labels"].tolist() == [class_label_of(*o) for o in objects] + [-1] * (3 - len(objects))
        for subject, rel, reference in relations:
            assert relation_between(boxes[subject], boxes[reference]) == rel
        image = (ex["image"] + 1) * 127.5
        for k, (color, shape) in enumerate(objects):
            pix = ex["instance_map"] == k + 1
            ys, xs = np.nonzero(pix)
            x0, y0, x1, y1 = boxes[k] * 64
            assert pix.sum() > 10 and xs.min() >= x0 - 1 and xs.max() <= x1 and ys.min() >= y0 - 1 and ys.max() <= y1
            assert np.all(ex["segmentation_labels"][pix] == SHAPES.index(shape) + 1)
            assert np.all(ex["segmentation"][pix].argmax(-1) == SHAPES.index(shape) + 1)
            mean = image[pix].mean(0)
            nearest = min(COLORS, key=lambda c: np.abs(np.asarray(COLORS[c]) - mean).sum())
            assert nearest == color, (ex["caption"], k, mean)
        assert np.all(ex["segmentation_labels"][ex["instance_map"] == 0] == 0)
    assert all(counts.values())


def test_parse_caption_grammar():
    text = "a red circle above a blue square and an orange star to the left of the blue square"
    objects, relations = parse_caption(text)
    assert objects == [("red", "circle"), ("blue", "square"), ("orange", "star")]
    assert relations == [(0, "above", 1), (2, "to the left of", 1)]
    assert parse_caption("A green cross.") == ([("green", "cross")], [])
    assert set(RELATIONS) == {"above", "below", "to the left of", "to the right of"}
    with pytest.raises(ValueError):
        parse_caption("two dogs playing")


def test_options_keys_and_config():
    ds = instantiate_from_config({"target": "ldm.data.scenes.ScenesTrain",
                                  "params": {"size": 32, "max_objects": 2, "keys": ["image", "caption"],
                                             "key_map": {"image": "jpg", "caption": "txt"}}})
    assert sorted(ds[0]) == ["jpg", "txt"]
    hard = Scenes(size=32, mask_kind="hard", degradation="bsrgan_light", min_objects=2, max_objects=2)
    ex = hard[0]
    assert 0.4 <= ex["mask"].mean() <= 0.5 and ex["num_objects"] == 2
    with pytest.raises(ConfigError):
        Scenes(split="dev")
    with pytest.raises(ConfigError):
        Scenes(min_objects=3, max_objects=2)


def test_batches_through_a_dataloader():
    loader = DataLoader(ScenesTrain(size=32, num_samples=8), batch_size=4, num_workers=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 32, 32, 3) and len(batch["caption"]) == 4
    assert batch["class_label"].shape == (4,) and batch["coordinates_bbox"].shape == (4, 9)


def test_object_size_and_backgrounds_options():
    ds = Scenes(size=32, max_objects=2, num_samples=64, object_size=[0.3, 0.45], backgrounds=["solid"])
    sides = []
    for i in range(len(ds)):
        scene = ds.scene(i)
        assert scene.background.kind == "solid"
        sides += [o.box[2] - o.box[0] for o in scene.objects]
    assert 0.3 - 1e-9 <= min(sides) and max(sides) <= 0.45 + 1e-9
    assert min(sides) < 0.33 and max(sides) > 0.42  # the whole range is drawn
    assert {ds.scene(i).background.kind for i in range(64)} == {"solid"}
    default = Scenes(size=32, max_objects=2, num_samples=64)
    assert len({default.scene(i).background.kind for i in range(64)}) == 4
    assert max(o.box[2] - o.box[0] for i in range(64) for o in default.scene(i).objects) <= 0.36 + 1e-9
    # a solid background is one colour: the pixels off the objects (but for antialiased edges)
    # equal the corner pixel
    ex = ds[0]
    off = ex["image"][ex["segmentation_labels"] == 0]
    assert np.mean(np.all(np.abs(off - ex["image"][0, 0]) < 1e-6, axis=-1)) > 0.9
    # validation captions stay held out with the options too
    val = Scenes(size=32, split="validation", max_objects=2, num_samples=32, object_size=[0.3, 0.45])
    assert all(caption_in_holdout(val.scene(i).caption, 0.1) for i in range(32) if val.scene(i).objects[1:])
    with pytest.raises(ConfigError, match="backgrounds"):
        Scenes(backgrounds=["plaid"])
    with pytest.raises(ConfigError, match="object_size"):
        Scenes(max_objects=3, object_size=[0.3, 0.45])
    with pytest.raises(ConfigError, match="object_size"):
        Scenes(max_objects=2, object_size=[0.4, 0.3])
