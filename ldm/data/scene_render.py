"""Drawing of the built-in scenes: varied backgrounds and antialiased flat-colour shapes.

A scene is described in resolution-independent terms (relative boxes, colours, background
parameters), so the same scene renders at any size. Shapes are drawn with PIL on a supersampled
canvas the size of the object's box and box-filtered down, which gives a coverage (alpha) per
pixel: the image composites the colours with it and the segmentation takes coverage >= 0.5.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLORS = {
    "red": (225, 35, 35),
    "orange": (250, 140, 20),
    "yellow": (240, 215, 35),
    "green": (35, 165, 55),
    "blue": (35, 85, 230),
    "purple": (150, 55, 205),
}
BACKGROUNDS = ("solid", "gradient", "noise", "stripes")


def _star(points: int = 5, inner: float = 0.42) -> list[tuple[float, float]]:
    """A star's vertices, stretched to touch all sides of the unit box."""
    pts = []
    for k in range(2 * points):
        r = 1.0 if k % 2 == 0 else inner
        a = -math.pi / 2 + k * math.pi / points
        pts.append((r * math.cos(a), r * math.sin(a)))
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return [((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in pts]


_ARM = 0.34  # width of the cross's arms, relative to its box
_A, _B = 0.5 - _ARM / 2, 0.5 + _ARM / 2
POLYGONS = {
    "square": [(0, 0), (1, 0), (1, 1), (0, 1)],
    "triangle": [(0.5, 0), (1, 1), (0, 1)],
    "diamond": [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)],
    "star": _star(),
    "cross": [(_A, 0), (_B, 0), (_B, _A), (1, _A), (1, _B), (_B, _B), (_B, 1), (_A, 1), (_A, _B),
              (0, _B), (0, _A), (_A, _A)],
}


@dataclass(frozen=True)
class Background:
    """Resolution-independent background: kind, two desaturated colours, angle, noise seed."""

    kind: str
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    angle: float
    frequency: float
    seed: int


def sample_background(rng: np.random.Generator, kinds: tuple[str, ...] = BACKGROUNDS) -> Background:
    """Random background of one of `kinds`, with low saturation so that the objects' colours stand out."""
    def muted() -> tuple[float, float, float]:
        return colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.18), rng.uniform(0.3, 0.92))

    kind = kinds[int(rng.integers(len(kinds)))]
    return Background(kind, muted(), muted(), float(rng.uniform(0, 2 * math.pi)),
                      float(rng.uniform(2.0, 6.0)), int(rng.integers(2**31)))


def render_background(bg: Background, size: int) -> np.ndarray:
    """(size, size, 3) float32 background in [0, 1]."""
    a = np.asarray(bg.color_a, dtype=np.float32)
    b = np.asarray(bg.color_b, dtype=np.float32)
    if bg.kind == "solid":
        return np.broadcast_to(a, (size, size, 3)).copy()
    u = (np.arange(size, dtype=np.float32) + 0.5) / size
    if bg.kind == "noise":  # smooth value noise: a coarse random grid, bicubic-upsampled
        cells = max(2, int(bg.frequency))
        grid = np.random.default_rng(bg.seed).random((cells, cells)).astype(np.float32)
        img = Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)
        t = np.clip(np.asarray(img), 0, 1)
    else:
        proj = math.cos(bg.angle) * u[None, :] + math.sin(bg.angle) * u[:, None]
        if bg.kind == "gradient":
            t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
        else:  # soft stripes
            t = 0.5 + 0.5 * np.sin(2 * math.pi * bg.frequency * proj)
            t = 0.5 + 0.5 * (t - 0.5)
    return a + (b - a) * t.astype(np.float32)[..., None]


def shape_coverage(shape: str, box_px: tuple[float, float, float, float], size: int,
                   supersample: int = 4) -> tuple[np.ndarray, tuple[int, int]]:
    """Coverage in [0, 1] of `shape` filling the pixel box (x0, y0, x1, y1); returns (alpha, offset).

    `alpha` covers the integer pixel window starting at `offset` = (left, top).
    """
    x0, y0, x1, y1 = box_px
    left, top = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    right, bottom = min(size, int(math.ceil(x1))), min(size, int(math.ceil(y1)))
    ww, hh = max(1, right - left), max(1, bottom - top)
    s = supersample
    canvas = Image.new("L", (ww * s, hh * s), 0)
    draw = ImageDraw.Draw(canvas)
    bx0, by0 = (x0 - left) * s, (y0 - top) * s
    bw, bh = (x1 - x0) * s, (y1 - y0) * s
    if shape == "circle":
        draw.ellipse([bx0, by0, bx0 + bw - 1, by0 + bh - 1], fill=255)
    else:
        draw.polygon([(bx0 + px * (bw - 1), by0 + py * (bh - 1)) for px, py in POLYGONS[shape]], fill=255)
    if s > 1:
        canvas = canvas.resize((ww, hh), Image.Resampling.BOX)
    return np.asarray(canvas, dtype=np.float32) * np.float32(1 / 255), (left, top)
