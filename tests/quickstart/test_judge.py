"""The quickstart's judge: caption parsing, object reading, scoring, and its accuracy on real renders."""
from __future__ import annotations

import numpy as np
import pytest

from ldm.data.scene_render import Background
from ldm.data.scenes import Scene, SceneObject, Scenes, render_scene
from ldm.quickstart import judge

GREY = Background("solid", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.0, 2.0, 0)


def scene_of(*objects: tuple[str, str, tuple[float, float, float, float]],
             relations: tuple = ()) -> Scene:
    from ldm.data.scene_render import COLORS

    return Scene(tuple(SceneObject(shape, color, COLORS[color], box) for color, shape, box in objects),
                 relations, GREY)


RED_CIRCLE_ABOVE_BLUE_STAR = scene_of(("red", "circle", (0.35, 0.05, 0.65, 0.35)),
                                      ("blue", "star", (0.35, 0.6, 0.65, 0.9)), relations=((0, "above", 1),))


def test_parse_caption_grammar():
    assert judge.parse_caption("a red circle") == ([("red", "circle")], [])
    assert judge.parse_caption("an orange star to the left of a blue square") == (
        [("orange", "star"), ("blue", "square")], [(0, "to the left of", 1)])
    objects, relations = judge.parse_caption(
        "a red circle above a blue square and a green star to the right of the blue square")
    assert objects == [("red", "circle"), ("blue", "square"), ("green", "star")]
    assert relations == [(0, "above", 1), (2, "to the right of", 1)]
    with pytest.raises(ValueError):
        judge.parse_caption("a photo of a cat")
    with pytest.raises(ValueError):  # the third object must refer to the second one
        judge.parse_caption("a red circle above a blue square and a green star below the red circle")


def test_parse_caption_agrees_with_the_data_set():
    data = Scenes(size=32, split="validation", max_objects=3)
    for i in range(40):
        scene = data.scene(i)
        objects, relations = judge.parse_caption(scene.caption)
        assert objects == [(o.color, o.shape) for o in scene.objects]
        assert relations == list(scene.relations)


def test_relation_of_reads_the_dominant_axis():
    a = judge.DetectedObject("red", "circle", (0.1, 0.1, 0.3, 0.3), 10)
    b = judge.DetectedObject("blue", "star", (0.15, 0.6, 0.35, 0.8), 10)
    c = judge.DetectedObject("green", "cross", (0.7, 0.15, 0.9, 0.35), 10)
    assert judge.relation_of(a, b) == "above"
    assert judge.relation_of(b, a) == "below"
    assert judge.relation_of(a, c) == "to the left of"
    assert judge.relation_of(c, a) == "to the right of"


@pytest.mark.parametrize("size", [32, 64])
def test_detect_objects_reads_colour_shape_and_box(size):
    image = render_scene(RED_CIRCLE_ABOVE_BLUE_STAR, size)[0]
    found = judge.detect_objects(image)
    assert [(o.color, o.shape) for o in found] == [("red", "circle"), ("blue", "star")] or \
        sorted((o.color, o.shape) for o in found) == [("blue", "star"), ("red", "circle")]
    red = next(o for o in found if o.color == "red")
    assert red.box == pytest.approx((0.35, 0.05, 0.65, 0.35), abs=1.5 / size)


def test_input_layouts_give_the_same_reading():
    image = render_scene(RED_CIRCLE_ABOVE_BLUE_STAR, 32)[0]
    as_float_chw = image.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0
    assert judge.describe(image) == judge.describe(as_float_chw)
    with pytest.raises(ValueError):
        judge.as_uint8_rgb(np.zeros((32, 32)))


def test_judge_marks_each_wrong_attribute():
    image = render_scene(RED_CIRCLE_ABOVE_BLUE_STAR, 32)[0]
    right = judge.judge(image, "a red circle above a blue star")
    assert right.correct and all(right.attributes.values())
    assert set(right.attributes) == {"count", "object0.color", "object0.shape", "object1.color",
                                     "object1.shape", "relation0"}
    wrong_relation = judge.judge(image, "a red circle below a blue star")
    assert not wrong_relation.correct
    assert [k for k, ok in wrong_relation.attributes.items() if not ok] == ["relation0"]
    wrong_shape = judge.judge(image, "a red square above a blue star")
    assert [k for k, ok in wrong_shape.attributes.items() if not ok] == ["object0.shape"]
    wrong_color = judge.judge(image, "a green circle above a blue star")
    assert [k for k, ok in wrong_color.attributes.items() if not ok] == ["object0.color"]
    missing = judge.judge(image, "a red circle")
    assert [k for k, ok in missing.attributes.items() if not ok] == ["count"]


def test_blank_image_is_wrong():
    blank = np.full((32, 32, 3), 128, dtype=np.uint8)
    assert judge.detect_objects(blank) == []
    verdict = judge.judge(blank, "a red circle")
    assert not verdict.correct and not verdict.attributes["count"]


def test_same_colour_objects_are_told_apart_by_shape():
    scene = scene_of(("red", "square", (0.05, 0.35, 0.35, 0.65)), ("red", "circle", (0.6, 0.35, 0.9, 0.65)))
    image = render_scene(scene, 32)[0]
    assert judge.judge(image, "a red square to the left of a red circle").correct
    assert not judge.judge(image, "a red circle to the left of a red square").correct


def test_score_summarises_accuracies():
    image = render_scene(RED_CIRCLE_ABOVE_BLUE_STAR, 32)[0]
    result = judge.score([image, image], ["a red circle above a blue star", "a red circle below a blue star"])
    assert result["n"] == 2 and result["caption_accuracy"] == 0.5
    assert result["attribute_accuracy"] == pytest.approx(11 / 12)
    assert result["relation_accuracy"] == 0.5 and result["shape_accuracy"] == 1.0


@pytest.mark.parametrize("size,max_objects,n", [(32, 3, 300), (64, 3, 100)])
def test_judge_is_at_least_98_percent_right_on_real_renders(size, max_objects, n):
    data = Scenes(size=size, split="validation", max_objects=max_objects)
    scenes = [data.scene(i) for i in range(n)]
    images = [render_scene(s, size)[0] for s in scenes]
    result = judge.score(images, [s.caption for s in scenes])
    assert result["caption_accuracy"] >= 0.98, result
