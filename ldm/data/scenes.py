"""The built-in data set: procedurally drawn scenes of coloured shapes, needing nothing from outside.

Each scene has one to three objects (6 shapes x 6 colours, no (colour, shape) twice in a scene)
on a muted background (solid, gradient, smooth noise or soft stripes), and comes with:
- `image`: (size, size, 3) float32 in [-1, 1];
- `caption`: following the grammar
      caption  := obj | obj REL obj | obj REL obj " and " obj REL "the " COLOR " " SHAPE
      obj      := ("a" | "an") " " COLOR " " SHAPE
      REL      := "above" | "below" | "to the left of" | "to the right of"
  e.g. "a red circle above a blue square and a green star to the left of the blue square"
  (with three objects both relations refer to the second object);
- `class_label` (0..35) and `human_label` ("red circle") of the first object named;
- `bboxes` (3, 4) relative (x0, y0, x1, y1), `bbox_labels` (3,) class labels (-1 = none),
  `num_objects`, and `coordinates_bbox`, the boxes as layout tokens (see `ldm.data.layout`);
- `segmentation`: (size, size, 7) one-hot float32 over background + 6 shapes, and
  `segmentation_labels` (size, size) int64 of the same, `instance_map` (size, size) int64
  (0 = background, k = k-th object named in the caption);
- `mask` (size, size, 1) float32 (1 = hole; by default the box of one object, enlarged) and
  `masked_image` (holes at -1); `LR_image`, the (size/downscale_f)^2 low-resolution copy.

A relation holds only clearly: the objects do not overlap along its axis and the centre offset
along it is at least 1.5 times the offset across it (`relation_between`). Scene i of a split is
fixed by (seed, split, i) at every resolution; train and validation use different streams, and
`holdout_captions` of the multi-object captions (by a hash of the text) occur only outside
train, so that validation captions are held out. No flips: they would change the relations.
"""
from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from ldm.data.base import select_keys, to_float
from ldm.data.degradations import get_degradation
from ldm.data.layout import Annotation, ObjectsBoundingBoxConditionalBuilder
from ldm.data.masks import MaskGenerator
from ldm.data.scene_render import (BACKGROUNDS, COLORS, SHAPES, Background, render_background, sample_background,
                                   shape_coverage)
from ldm.util import ConfigError

RELATIONS = ("above", "below", "to the left of", "to the right of")
COLOR_NAMES = tuple(COLORS)
NUM_CLASSES = len(SHAPES) * len(COLORS)
NUM_SEGMENTATION_CLASSES = 1 + len(SHAPES)
MAX_OBJECTS = 3
SPLITS = {"train": 0, "validation": 1, "test": 2}
_RATIO, _GAP, _MARGIN = 1.5, 0.04, 0.03


def class_label_of(color: str, shape: str) -> int:
    """Class label of a (colour, shape) pair: shape index * 6 + colour index."""
    return SHAPES.index(shape) * len(COLORS) + COLOR_NAMES.index(color)


def human_label_of(label: int) -> str:
    """'red circle' for a class label."""
    return f"{COLOR_NAMES[label % len(COLORS)]} {SHAPES[label // len(COLORS)]}"


@dataclass(frozen=True)
class SceneObject:
    """One object: shape, colour name, its jittered RGB and relative box (x0, y0, x1, y1)."""

    shape: str
    color: str
    rgb: tuple[int, int, int]
    box: tuple[float, float, float, float]

    @property
    def class_label(self) -> int:
        """Class label of the (colour, shape) pair."""
        return class_label_of(self.color, self.shape)

    @property
    def phrase(self) -> str:
        """'a red circle' / 'an orange star'."""
        article = "an" if self.color[0] in "aeiou" else "a"
        return f"{article} {self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A scene: objects in caption order, (subject, relation, reference) triples, background."""

    objects: tuple[SceneObject, ...]
    relations: tuple[tuple[int, str, int], ...]
    background: Background

    @property
    def caption(self) -> str:
        """The scene's caption in the grammar of the module docstring."""
        o = self.objects
        if len(o) == 1:
            return o[0].phrase
        text = f"{o[0].phrase} {self.relations[0][1]} {o[1].phrase}"
        if len(o) == 3:
            text += f" and {o[2].phrase} {self.relations[1][1]} the {o[1].color} {o[1].shape}"
        return text


def relation_between(a: Sequence[float], b: Sequence[float]) -> str | None:
    """The clear relation of box a to box b (x0, y0, x1, y1, y down), or None if ambiguous."""
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    if abs(dy) >= _RATIO * abs(dx):
        if a[3] <= b[1]:
            return "above"
        if a[1] >= b[3]:
            return "below"
    elif abs(dx) >= _RATIO * abs(dy):
        if a[2] <= b[0]:
            return "to the left of"
        if a[0] >= b[2]:
            return "to the right of"
    return None


_REL = "|".join(re.escape(r) for r in RELATIONS)
_OBJ = r"an? (\w+) (\w+)"
_PATTERNS = (
    re.compile(rf"^{_OBJ}$"),
    re.compile(rf"^{_OBJ} ({_REL}) {_OBJ}$"),
    re.compile(rf"^{_OBJ} ({_REL}) {_OBJ} and {_OBJ} ({_REL}) the (\w+) (\w+)$"),
)


def parse_caption(caption: str) -> tuple[list[tuple[str, str]], list[tuple[int, str, int]]]:
    """Objects [(colour, shape)] and relations [(subject, relation, reference)] of a caption."""
    text = " ".join(caption.strip().lower().rstrip(".").split())
    for n, pattern in enumerate(_PATTERNS, start=1):
        m = pattern.match(text)
        if not m:
            continue
        g = m.groups()
        if n == 1:
            return [(g[0], g[1])], []
        if n == 2:
            return [(g[0], g[1]), (g[3], g[4])], [(0, g[2], 1)]
        if (g[8], g[9]) != (g[3], g[4]):
            break
        return [(g[0], g[1]), (g[3], g[4]), (g[5], g[6])], [(0, g[2], 1), (2, g[7], 1)]
    raise ValueError(f"not a scenes caption: {caption!r}")


def caption_in_holdout(caption: str, fraction: float) -> bool:
    """Whether a caption belongs to the held-out (non-train) part, by a stable hash."""
    return (zlib.crc32(caption.encode()) % 10_000) < fraction * 10_000


def _disjoint(a: Sequence[float], b: Sequence[float]) -> bool:
    return (a[2] + _GAP <= b[0] or b[2] + _GAP <= a[0] or a[3] + _GAP <= b[1] or b[3] + _GAP <= a[1])


def default_object_size(n: int) -> tuple[float, float]:
    """Range of an object's side (relative to the image) in a scene of n objects."""
    return (0.18, 0.28) if n == 3 else (0.22, 0.36)


def sample_scene(rng: np.random.Generator, n: int, train: bool, holdout: float,
                 object_size: tuple[float, float] | None = None,
                 backgrounds: tuple[str, ...] = BACKGROUNDS) -> Scene:
    """Draw a scene of n objects with clear relations (rejection sampling of the layout).

    `object_size` is the (min, max) side of an object relative to the image (default by n);
    `backgrounds` the kinds of background to draw from.
    """
    lo, hi = object_size or default_object_size(n)
    for _ in range(10_000):
        labels = rng.choice(NUM_CLASSES, size=n, replace=False)
        sides = rng.uniform(lo, hi, size=n)
        boxes = []
        for side in sides:
            cx, cy = rng.uniform(_MARGIN + side / 2, 1 - _MARGIN - side / 2, size=2)
            boxes.append((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
        if any(not _disjoint(boxes[i], boxes[j]) for i in range(n) for j in range(i + 1, n)):
            continue
        pairs = [(0, 1), (2, 1)][: n - 1]
        rels = [relation_between(boxes[i], boxes[j]) for i, j in pairs]
        if any(r is None for r in rels):
            continue
        objects = []
        for label, box in zip(labels, boxes):
            color, shape = COLOR_NAMES[label % len(COLORS)], SHAPES[label // len(COLORS)]
            rgb = np.clip(np.asarray(COLORS[color]) + rng.integers(-12, 13, size=3), 0, 255)
            objects.append(SceneObject(shape, color, tuple(int(c) for c in rgb),
                                       tuple(float(v) for v in box)))
        scene = Scene(tuple(objects), tuple((i, r, j) for (i, j), r in zip(pairs, rels)),
                      sample_background(rng, backgrounds))
        if n > 1 and holdout > 0 and caption_in_holdout(scene.caption, holdout) == train:
            continue
        return scene
    raise RuntimeError("could not place the objects of a scene")  # pragma: no cover


def render_scene(scene: Scene, size: int, supersample: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 image (size, size, 3), shape-class map and instance map (size, size) of a scene."""
    ss = supersample or max(1, min(4, 512 // size))
    img = render_background(scene.background, size)
    seg = np.zeros((size, size), dtype=np.int64)
    inst = np.zeros((size, size), dtype=np.int64)
    for k, obj in enumerate(scene.objects):
        box_px = tuple(v * size for v in obj.box)
        alpha, (left, top) = shape_coverage(obj.shape, box_px, size, ss)
        h, w = alpha.shape
        window = (slice(top, top + h), slice(left, left + w))
        rgb = np.asarray(obj.rgb, dtype=np.float32) / 255.0
        img[window] = img[window] * (1 - alpha[..., None]) + rgb * alpha[..., None]
        inside = alpha >= 0.5
        seg[window][inside] = SHAPES.index(obj.shape) + 1
        inst[window][inside] = k + 1
    return (img * np.float32(255.0) + np.float32(0.5)).astype(np.uint8), seg, inst


class Scenes(Dataset):
    """Procedurally drawn scenes with captions, labels, boxes, segmentation, masks and LR copies.

    Args:
        size: side of the square images (any resolution; 64 is the quickstart's).
        split: `train`, `validation` or `test` (fixed, disjoint streams).
        num_samples: length of the split (default 20000 for train, 1000 otherwise).
        seed: seed of the whole data set; scene i is a function of (seed, split, i).
        min_objects: fewest objects in a scene (1..3).
        max_objects: most objects in a scene (1..3).
        holdout_captions: fraction of multi-object captions that occur only outside train.
        object_size: (min, max) side of an object relative to the image (default: 0.22-0.36 for
            one or two objects, 0.18-0.28 with three); larger objects are easier at low resolution.
        backgrounds: kinds of background drawn from (default all of `solid`, `gradient`,
            `noise`, `stripes`).
        downscale_f: factor of the `LR_image` copy.
        degradation: how `LR_image` is made (see `ldm.data.degradations`, e.g. bicubic, bsrgan_light).
        mask_kind: `object` (the enlarged box of one object) or a `ldm.data.masks` kind.
        layout_tokens: vocabulary of the `coordinates_bbox` tokens (grid of sqrt(n) per side).
        onehot_segmentation: include the one-hot `segmentation` (else only the label map).
        supersample: antialiasing factor of the shapes (default 4 up to 128 px, less above).
        keys: if given, only these keys are returned.
        key_map: renames of returned keys, e.g. `{"image": "jpg", "caption": "txt"}`.
    """

    def __init__(self, size: int = 64, split: str = "train", num_samples: int | None = None,
                 seed: int = 0, min_objects: int = 1, max_objects: int = 3,
                 holdout_captions: float = 0.1, object_size: Sequence[float] | None = None,
                 backgrounds: Sequence[str] | None = None, downscale_f: int = 4, degradation: str = "bicubic",
                 mask_kind: str = "object", layout_tokens: int = 1024, onehot_segmentation: bool = True,
                 supersample: int | None = None, keys: Sequence[str] | None = None,
                 key_map: Mapping[str, str] | None = None) -> None:
        if split not in SPLITS:
            raise ConfigError(f"Scenes split '{split}' unknown; use one of {', '.join(SPLITS)}")
        if not 1 <= min_objects <= max_objects <= MAX_OBJECTS:
            raise ConfigError(f"Scenes needs 1 <= min_objects <= max_objects <= {MAX_OBJECTS}")
        if object_size is not None and not (len(object_size) == 2 and 0.05 <= object_size[0] <= object_size[1]
                                            <= (0.45 if max_objects < 3 else 0.3)):
            raise ConfigError(f"Scenes object_size must be [min, max] with 0.05 <= min <= max <= "
                              f"{0.45 if max_objects < 3 else 0.3} (for max_objects={max_objects}), got {object_size}")
        unknown = sorted(set(backgrounds or ()) - set(BACKGROUNDS))
        if unknown or (backgrounds is not None and not backgrounds):
            raise ConfigError(f"Scenes backgrounds must be a non-empty list of {', '.join(BACKGROUNDS)}, "
                              f"got {list(backgrounds or [])}")
        if size % downscale_f:
            raise ConfigError(f"Scenes size {size} is not divisible by downscale_f {downscale_f}")
        self.size, self.split, self.seed = int(size), split, int(seed)
        self.num_samples = int(num_samples) if num_samples else (20_000 if split == "train" else 1_000)
        self.min_objects, self.max_objects = min_objects, max_objects
        self.holdout = float(holdout_captions)
        self.object_size = tuple(float(v) for v in object_size) if object_size is not None else None
        self.backgrounds = tuple(backgrounds) if backgrounds else BACKGROUNDS
        self.downscale_f = int(downscale_f)
        self.degrade = get_degradation(degradation, self.downscale_f)
        self.mask_kind = mask_kind
        self.masks = None if mask_kind == "object" else MaskGenerator(mask_kind)
        self.builder = ObjectsBoundingBoxConditionalBuilder(
            NUM_CLASSES, MAX_OBJECTS, layout_tokens, encode_crop=False, use_group_parameter=False)
        self.onehot = onehot_segmentation
        self.supersample = supersample
        self.keys, self.key_map = keys, key_map

    def __len__(self) -> int:
        return self.num_samples

    def _rng(self, i: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLITS[self.split], int(i), stream])

    def scene(self, i: int) -> Scene:
        """The description of scene i (without drawing it)."""
        if not 0 <= i < self.num_samples:
            raise IndexError(f"scene {i} out of range for {self.num_samples} samples")
        rng = self._rng(i, 0)
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        return sample_scene(rng, n, self.split == "train", self.holdout, self.object_size, self.backgrounds)

    def _mask(self, scene: Scene, i: int) -> np.ndarray:
        rng = self._rng(i, 1)
        if self.masks is not None:
            return self.masks(self.size, self.size, rng)
        obj = scene.objects[int(rng.integers(len(scene.objects)))]
        pad = 0.15 * (obj.box[2] - obj.box[0])
        centers = (np.arange(self.size) + 0.5) / self.size
        xs = (centers >= obj.box[0] - pad) & (centers <= obj.box[2] + pad)
        ys = (centers >= obj.box[1] - pad) & (centers <= obj.box[3] + pad)
        return (ys[:, None] & xs[None, :]).astype(np.float32)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        scene = self.scene(i)
        want = (lambda key: True) if not self.keys else (lambda key: key in self.keys)
        image8, seg, inst = render_scene(scene, self.size, self.supersample)
        image = to_float(image8)
        first = scene.objects[0]
        n = len(scene.objects)
        example = {"image": image, "caption": scene.caption, "class_label": first.class_label,
                   "human_label": human_label_of(first.class_label), "num_objects": n,
                   "segmentation_labels": seg, "instance_map": inst}
        if want("bboxes") or want("bbox_labels") or want("coordinates_bbox"):
            example["bboxes"] = np.zeros((MAX_OBJECTS, 4), dtype=np.float32)
            example["bboxes"][:n] = [o.box for o in scene.objects]
            example["bbox_labels"] = np.full((MAX_OBJECTS,), -1, dtype=np.int64)
            example["bbox_labels"][:n] = [o.class_label for o in scene.objects]
            annotations = [Annotation((o.box[0], o.box[1], o.box[2] - o.box[0], o.box[3] - o.box[1]),
                                      o.class_label) for o in scene.objects]
            example["coordinates_bbox"] = np.asarray(self.builder.build(annotations)[0], dtype=np.int64)
        if want("mask") or want("masked_image"):
            mask = self._mask(scene, i)[..., None]
            example["mask"] = mask
            example["masked_image"] = np.where(mask > 0.5, np.float32(-1.0), image)
        if want("LR_image"):
            example["LR_image"] = to_float(self.degrade(image8, self._rng(i, 2)))
        if self.onehot and want("segmentation"):
            example["segmentation"] = np.eye(NUM_SEGMENTATION_CLASSES, dtype=np.float32)[seg]
        return select_keys(example, self.keys, self.key_map)


class ScenesTrain(Scenes):
    """The train split of the built-in scenes (see `Scenes` for the arguments)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(split="train", **kwargs)


class ScenesValidation(Scenes):
    """The validation split of the built-in scenes (see `Scenes` for the arguments)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(split="validation", **kwargs)
