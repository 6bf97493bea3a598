"""Inpainting masks in the style of LaMa (Suvorov et al., WACV 2022), drawn with PIL and numpy.

Kinds (sizes are LaMa's for 256 px and scale with the image):
- `thin`, `medium`, `thick`: random brush strokes (polylines of thick segments with round ends)
  of LaMa's evaluation masks;
- `box`: one to three random rectangles;
- `mixed`: LaMa's training mix, thick strokes plus boxes;
- `hard`: the 40-50% setting of the LDM paper's Table 7 (any kind with `min_coverage=0.4,
  max_coverage=0.5` works the same way: strokes and boxes are added until the masked fraction is
  inside the range).

A mask is an (H, W) float32 array with 1 where pixels are to be filled. All randomness comes from
the numpy Generator passed in, so a validation set can give every image the same mask each time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ldm.util import ConfigError


@dataclass(frozen=True)
class StrokeSpec:
    """LaMa's irregular-mask parameters (at 256 px)."""

    max_angle: int = 4
    max_len: int = 60
    max_width: int = 20
    min_times: int = 0
    max_times: int = 10


@dataclass(frozen=True)
class BoxSpec:
    """LaMa's rectangle-mask parameters (at 256 px)."""

    margin: int = 10
    bbox_min_size: int = 30
    bbox_max_size: int = 150
    min_times: int = 1
    max_times: int = 3


STROKES = {
    "thin": StrokeSpec(max_angle=4, max_len=40, max_width=10, min_times=4, max_times=50),
    "medium": StrokeSpec(max_angle=4, max_len=100, max_width=50, min_times=4, max_times=5),
    "thick": StrokeSpec(max_angle=4, max_len=200, max_width=100, min_times=1, max_times=5),
}
KINDS = ("thin", "medium", "thick", "box", "mixed", "hard")


def draw_strokes(draw: ImageDraw.ImageDraw, h: int, w: int, spec: StrokeSpec,
                 rng: np.random.Generator, times: int | None = None) -> None:
    """Draw LaMa's random brush strokes (make_random_irregular_mask) onto `draw`."""
    s = min(h, w) / 256.0
    times = int(rng.integers(spec.min_times, spec.max_times + 1)) if times is None else times
    for i in range(times):
        x, y = int(rng.integers(w)), int(rng.integers(h))
        for _ in range(1 + int(rng.integers(5))):
            angle = 0.01 + int(rng.integers(spec.max_angle))
            if i % 2 == 0:
                angle = 2 * np.pi - angle
            length = (10 + int(rng.integers(spec.max_len))) * s
            width = max(1, int(round((5 + int(rng.integers(spec.max_width))) * s)))
            ex = int(np.clip(x + length * np.sin(angle), 0, w))
            ey = int(np.clip(y + length * np.cos(angle), 0, h))
            draw.line([(x, y), (ex, ey)], fill=255, width=width)
            r = width / 2
            for cx, cy in ((x, y), (ex, ey)):  # round ends, as cv2.line draws thick lines
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
            x, y = ex, ey


def draw_boxes(draw: ImageDraw.ImageDraw, h: int, w: int, spec: BoxSpec,
               rng: np.random.Generator, times: int | None = None) -> None:
    """Draw LaMa's random rectangles (make_random_rectangle_mask) onto `draw`."""
    s = min(h, w) / 256.0
    margin = int(spec.margin * s)
    lo = max(1, int(spec.bbox_min_size * s))
    hi = max(lo + 1, min(int(spec.bbox_max_size * s), h - 2 * margin, w - 2 * margin))
    times = int(rng.integers(spec.min_times, spec.max_times + 1)) if times is None else times
    for _ in range(times):
        bw, bh = int(rng.integers(lo, hi)), int(rng.integers(lo, hi))
        x0 = int(rng.integers(margin, max(margin + 1, w - margin - bw + 1)))
        y0 = int(rng.integers(margin, max(margin + 1, h - margin - bh + 1)))
        draw.rectangle([x0, y0, x0 + bw - 1, y0 + bh - 1], fill=255)


class MaskGenerator:
    """Random inpainting masks: `MaskGenerator("thick")(h, w, rng)` -> (h, w) float32 in {0, 1}.

    Args:
        kind: one of `thin`, `medium`, `thick`, `box`, `mixed` (LaMa training), `hard` (40-50%).
        min_coverage: if set (or kind `hard`), add strokes/boxes until at least this fraction is masked.
        max_coverage: with min_coverage, never mask more than this fraction.
    """

    def __init__(self, kind: str = "mixed", min_coverage: float | None = None,
                 max_coverage: float | None = None) -> None:
        if kind not in KINDS:
            raise ConfigError(f"mask kind '{kind}' unknown; use one of {', '.join(KINDS)}")
        if kind == "hard":
            min_coverage = 0.4 if min_coverage is None else min_coverage
            max_coverage = 0.5 if max_coverage is None else max_coverage
        self.kind = kind
        self.min_coverage = min_coverage
        self.max_coverage = 1.0 if max_coverage is None else max_coverage
        if self.min_coverage is not None and not 0 <= self.min_coverage < self.max_coverage <= 1:
            raise ConfigError(f"mask coverage range [{min_coverage}, {max_coverage}] is not valid")

    def _draw_once(self, draw: ImageDraw.ImageDraw, h: int, w: int, rng: np.random.Generator) -> None:
        kind = self.kind
        if kind in STROKES:
            draw_strokes(draw, h, w, STROKES[kind], rng)
        elif kind == "box":
            draw_boxes(draw, h, w, BoxSpec(), rng)
        else:  # mixed / hard: LaMa's training masks, thick strokes plus boxes
            draw_strokes(draw, h, w, STROKES["thick"], rng)
            draw_boxes(draw, h, w, BoxSpec(max_times=4), rng)

    def __call__(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """One mask of the given size (1 = hole)."""
        canvas = Image.new("L", (width, height), 0)
        if self.min_coverage is None:
            self._draw_once(ImageDraw.Draw(canvas), height, width, rng)
            return (np.asarray(canvas) > 127).astype(np.float32)
        return self._fill_to_coverage(canvas, height, width, rng)

    def _fill_to_coverage(self, canvas: Image.Image, h: int, w: int,
                          rng: np.random.Generator) -> np.ndarray:
        """Add single strokes/boxes (thinner after failures) until the coverage is in range."""
        lo, hi = self.min_coverage, self.max_coverage
        mask = np.zeros((h, w), dtype=bool)
        specs = [STROKES["thick"], STROKES["medium"], STROKES["thin"]]
        failures = 0
        while mask.mean() < lo and failures < 200:
            trial = canvas.copy()
            draw = ImageDraw.Draw(trial)
            level = min(failures // 20, 2)
            if level == 0 and rng.random() < 0.3:
                draw_boxes(draw, h, w, BoxSpec(), rng, times=1)
            else:
                draw_strokes(draw, h, w, specs[level], rng, times=1)
            candidate = np.asarray(trial) > 127
            if candidate.mean() <= hi:
                canvas, mask = trial, candidate
            else:
                failures += 1
        if mask.mean() < lo:  # rare: fill a band of free pixels to reach the minimum
            need = int(np.ceil(lo * h * w)) - int(mask.sum())
            free = np.flatnonzero(~mask.reshape(-1))
            start = int(rng.integers(0, max(1, free.size - need)))
            mask.reshape(-1)[free[start:start + need]] = True
        return mask.astype(np.float32)
