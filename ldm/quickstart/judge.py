"""A rule-based judge for the built-in scenes: reads objects off an image and scores captions.

Reading an image (`detect_objects`):
1. object pixels are the saturated ones (HSV saturation >= `min_saturation`): the scenes'
   backgrounds are muted (saturation <= 0.18) and the six object colours are vivid;
2. each object pixel takes the palette colour nearest in hue (hue does not change when a colour
   is mixed with grey, so antialiased edges keep their object's colour);
3. each colour's pixels split into 8-connected components; components smaller than
   `min_area_fraction` of the image are noise;
4. a component's coverage is estimated per pixel by unmixing the object colour from the local
   background colour, and its shape is the best template: every shape of
   `ldm.data.scene_render` is drawn with the renderer itself in the component's (square) box, at
   a few box sizes and half-pixel shifts around the measured one, and compared with the
   coverage by soft intersection over union.

Scoring a caption (`judge`): the caption is parsed with the scenes grammar
(`ldm.data.scenes.parse_caption`); its objects are matched to the detected ones by the
assignment that gets the most attributes right. The attributes are the number of objects,
each named object's colour and shape, and each relation, read from the matched boxes as the
dominant axis of the centre offset (y down). A caption is right when all its attributes are.
"""
from __future__ import annotations

import colorsys
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ldm.data.scene_render import COLORS, SHAPES, shape_coverage
from ldm.data.scenes import parse_caption

COLOR_NAMES = tuple(COLORS)
COLOR_HUES = np.array([colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))[0] for rgb in COLORS.values()])
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
# changes of side and shifts of centre (pixels) of the template boxes tried around a measured box
_SIDE_CHANGES = (-1.0, -0.5, 0.0, 0.5)
_SHIFTS = tuple((ox, oy) for ox in (-0.5, 0.0, 0.5) for oy in (-0.5, 0.0, 0.5))


@dataclass(frozen=True)
class DetectedObject:
    """An object read off an image: colour, shape, relative box (x0, y0, x1, y1), area in pixels,
    and the template IoU of every shape (`shape_scores`, in `SHAPES` order)."""

    color: str
    shape: str
    box: tuple[float, float, float, float]
    area: int
    shape_scores: tuple[float, ...] = ()

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


@dataclass
class Verdict:
    """The judge's reading of one (image, caption) pair: each attribute right or wrong."""

    caption: str
    attributes: dict[str, bool] = field(default_factory=dict)
    detected: list[DetectedObject] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return bool(self.attributes) and all(self.attributes.values())


def as_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """An HWC uint8 RGB array from uint8 HWC, float HWC in [-1, 1], or float/uint8 CHW."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3] or [3, H, W], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint((arr.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return arr


def hue_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HSV hue in [0, 1), saturation and value of a uint8 [H, W, 3] image."""
    x = rgb.astype(np.float32) / 255.0
    vmax, vmin = x.max(-1), x.min(-1)
    delta = vmax - vmin
    sat = np.where(vmax > 0, delta / np.maximum(vmax, 1e-6), 0.0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    d = np.maximum(delta, 1e-6)
    hue = np.where(vmax == r, ((g - b) / d) % 6.0, np.where(vmax == g, (b - r) / d + 2.0, (r - g) / d + 4.0))
    return (hue / 6.0) % 1.0, sat, vmax


def nearest_color(hue: np.ndarray) -> np.ndarray:
    """Index into `COLOR_NAMES` of the palette hue nearest (on the circle) to each hue."""
    diff = np.abs(hue[..., None] - COLOR_HUES)
    return np.minimum(diff, 1.0 - diff).argmin(-1)


def soft_alpha(rgb: np.ndarray, component: np.ndarray, vivid: np.ndarray) -> np.ndarray:
    """Per-pixel coverage estimate [H, W] of one object: each pixel near the component is
    unmixed as `alpha * object colour + (1 - alpha) * background colour`, with the object colour
    the median of the component's most saturated pixels and the background colour the median of
    the non-vivid pixels around it."""
    x = rgb.astype(np.float32) / 255.0
    near = ndimage.binary_dilation(component, structure=_EIGHT_CONNECTED, iterations=1)
    ring = ndimage.binary_dilation(component, structure=_EIGHT_CONNECTED, iterations=3) & ~vivid & ~near
    pixels = x[component]
    sat = pixels.max(-1) - pixels.min(-1)
    obj = np.median(pixels[sat >= np.median(sat)], axis=0)
    bg = np.median(x[ring], axis=0) if ring.any() else np.full(3, 0.5, dtype=np.float32)
    direction = obj - bg
    norm = float(direction @ direction)
    if norm < 1e-4:
        return component.astype(np.float32)
    alpha = np.clip(((x - bg) @ direction) / norm, 0.0, 1.0)
    return np.where(near, alpha, 0.0).astype(np.float32)


def classify_shape(alpha: np.ndarray, box: tuple[int, int, int, int]) -> tuple[str, tuple[float, ...]]:
    """Best-matching shape for a coverage map `alpha` [H, W] whose object lies in the pixel box
    (x0, y0, x1, y1) (exclusive ends): soft IoU with every shape drawn by the scenes renderer in
    square boxes around the measured one (sizes and centres varied by half pixels)."""
    height, width = alpha.shape
    size = max(height, width)
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0)
    pad = 2
    wx0, wy0 = max(0, x0 - pad), max(0, y0 - pad)
    wx1, wy1 = min(width, x1 + pad), min(height, y1 + pad)
    observed = alpha[wy0:wy1, wx0:wx1]
    def iou(shape: str, ds: float, ox: float, oy: float) -> float:
        s = max(1.0, side + ds)
        box_px = (cx + ox - s / 2, cy + oy - s / 2, cx + ox + s / 2, cy + oy + s / 2)
        cov, (left, top) = shape_coverage(shape, box_px, size, supersample=4)
        template = np.zeros((height, width), dtype=np.float32)
        h, w = cov.shape
        template[top:top + h, left:left + w] = cov
        template = template[wy0:wy1, wx0:wx1]
        union = float(np.maximum(template, observed).sum())
        return float(np.minimum(template, observed).sum()) / union if union else 0.0

    scores = []
    for shape in SHAPES:  # best size at the measured centre, then the best half-pixel shift
        best_ds = max(_SIDE_CHANGES, key=lambda ds: iou(shape, ds, 0.0, 0.0))
        scores.append(max(iou(shape, best_ds, ox, oy) for ox, oy in _SHIFTS))
    return SHAPES[int(np.argmax(scores))], tuple(scores)


def detect_objects(image: np.ndarray, min_saturation: float = 0.4, min_value: float = 0.2,
                   min_area_fraction: float = 0.008) -> list[DetectedObject]:
    """The objects in a scene image (any layout `as_uint8_rgb` takes), largest first."""
    rgb = as_uint8_rgb(image)
    height, width = rgb.shape[:2]
    hue, sat, val = hue_saturation(rgb)
    vivid = (sat >= min_saturation) & (val >= min_value)
    color_index = nearest_color(hue)
    min_area = max(2, int(round(min_area_fraction * height * width)))
    objects = []
    for c, name in enumerate(COLOR_NAMES):
        labels, count = ndimage.label(vivid & (color_index == c), structure=_EIGHT_CONNECTED)
        if count == 0:
            continue
        for k, sl in enumerate(ndimage.find_objects(labels), start=1):
            component = labels == k
            area = int(component.sum())
            if area < min_area:
                continue
            box = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
            shape, scores = classify_shape(soft_alpha(rgb, component, vivid), box)
            rel_box = (box[0] / width, box[1] / height, box[2] / width, box[3] / height)
            objects.append(DetectedObject(name, shape, rel_box, area, scores))
    return sorted(objects, key=lambda o: -o.area)


def relation_of(a: DetectedObject, b: DetectedObject) -> str:
    """The relation of a to b by the dominant axis of their centre offset (y points down)."""
    (ax, ay), (bx, by) = a.center, b.center
    dx, dy = ax - bx, ay - by
    if abs(dy) >= abs(dx):
        return "above" if dy < 0 else "below"
    return "to the left of" if dx < 0 else "to the right of"


def _attributes(objects: Sequence[tuple[str, str]], relations: Sequence[tuple[int, str, int]],
                detected: Sequence[DetectedObject], assignment: Sequence[int | None]) -> dict[str, bool]:
    attrs = {"count": len(detected) == len(objects)}
    for i, (color, shape) in enumerate(objects):
        j = assignment[i]
        attrs[f"object{i}.color"] = j is not None and detected[j].color == color
        attrs[f"object{i}.shape"] = j is not None and detected[j].shape == shape
    for r, (i, relation, k) in enumerate(relations):
        ji, jk = assignment[i], assignment[k]
        attrs[f"relation{r}"] = (ji is not None and jk is not None
                                 and relation_of(detected[ji], detected[jk]) == relation)
    return attrs


def judge(image: np.ndarray, caption: str, max_candidates: int = 6) -> Verdict:
    """Score one image against its caption (see the module docstring for the attributes)."""
    objects, relations = parse_caption(caption)
    detected = detect_objects(image)[:max_candidates]
    slots: list[int | None] = list(range(len(detected)))
    best: dict[str, bool] | None = None
    pool = slots + [None] * len(objects)
    for assignment in itertools.permutations(pool, len(objects)):
        used = [j for j in assignment if j is not None]
        if len(used) != len(set(used)):
            continue
        attrs = _attributes(objects, relations, detected, assignment)
        if best is None or sum(attrs.values()) > sum(best.values()):
            best = attrs
    return Verdict(caption, best or {}, list(detected))


def describe(image: np.ndarray, max_objects: int = 3) -> str:
    """A caption-like reading of an image: its objects, largest first ('red circle, blue star')."""
    return ", ".join(f"{o.color} {o.shape}" for o in detect_objects(image)[:max_objects]) or "(nothing)"


def score(images: Iterable[np.ndarray], captions: Iterable[str]) -> dict[str, float]:
    """Caption accuracy (all attributes right), attribute accuracy (over all attributes) and
    the accuracy of each attribute kind (count, color, shape, relation) over image/caption pairs."""
    n = right = 0
    totals: dict[str, list[int]] = {"all": [0, 0]}
    for image, caption in zip(images, captions):
        verdict = judge(image, caption)
        n += 1
        right += verdict.correct
        for name, ok in verdict.attributes.items():
            kind = name.split(".")[-1].rstrip("0123456789")
            for key in ("all", kind):
                totals.setdefault(key, [0, 0])
                totals[key][0] += int(ok)
                totals[key][1] += 1
    if n == 0:
        raise ValueError("no images to score")
    result = {"n": float(n), "caption_accuracy": right / n,
              "attribute_accuracy": totals["all"][0] / max(1, totals["all"][1])}
    for kind, (ok, total) in sorted(totals.items()):
        if kind != "all":
            result[f"{kind}_accuracy"] = ok / total
    return result
