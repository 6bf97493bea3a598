"""Image loading, conversion, resizing and the robustness rules every file-based loader shares.

Every sample is a dict whose `image` is an HWC float32 array in [-1, 1]. The helpers here:
- decode any file PIL reads into 8-bit RGB (grayscale, palette, RGBA/LA composited on white,
  CMYK, 16-bit and 32-bit integer and float images), honouring the EXIF orientation;
- resize / crop / flip with PIL and numpy (`ImageTransform`), upscaling images smaller than the
  target with a warning;
- `ImagePaths`: a map-style data set over a list of files that skips corrupt or truncated files
  with a warning and a running count instead of crashing a long run;
- `check_files_exist`: a list file that names missing files fails at start-up.
"""
from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from ldm.util import ConfigError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "linear": Image.Resampling.BILINEAR,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "area": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class DataError(ConfigError):
    """A data set cannot be built (missing or unreleased data); the message is one line."""


class MissingDataError(DataError):
    """The expected files are not there: the message names the path and the expected layout."""


class UnreleasedDatasetError(DataError):
    """The data set that a released config names was internal and never published."""


def missing_data(name: str, path: str | os.PathLike, layout: str) -> MissingDataError:
    """The one-line error for absent data: what was looked for, where, and the layout expected."""
    return MissingDataError(f"{name}: no data at '{path}'; expected layout: {layout}")


def unreleased(name: str, what: str, use_instead: str) -> UnreleasedDatasetError:
    """The one-line error for data sets of released configs that were never published."""
    return UnreleasedDatasetError(
        f"{name}: the {what} data set was internal to the original authors and never released; "
        f"train on your own data with {use_instead} (see configs/data/)"
    )


class WarnCounter:
    """Counts an event and logs a warning for the first few and then at powers of ten."""

    def __init__(self, what: str, first: int = 5) -> None:
        self.what = what
        self.first = first
        self.count = 0

    def __call__(self, detail: str) -> None:
        """Count one occurrence and log it when it is among the first or at a power of ten."""
        self.count += 1
        n = self.count
        if n <= self.first or (n >= 10 and np.log10(n).is_integer()):
            logger.warning("%s: %s (%d so far in this process)", self.what, detail, n)


_RNGS: dict[tuple[int, int], np.random.Generator] = {}


def sample_rng() -> np.random.Generator:
    """numpy Generator for augmentations, seeded from torch's seed of this process or worker.

    DataLoader workers get distinct torch seeds per worker and epoch, and `seed_everything`
    fixes the main process's, so augmentations are reproducible and never repeat across workers.
    """
    key = (os.getpid(), torch.initial_seed())
    rng = _RNGS.get(key)
    if rng is None:
        _RNGS.clear()
        rng = _RNGS[key] = np.random.default_rng(key[1])
    return rng


# ---- decoding ---------------------------------------------------------------------------------

def _high_bit_depth_to_uint8(img: Image.Image) -> Image.Image:
    """Map 16-bit, 32-bit integer or float single-channel images to 8-bit grayscale."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        arr = arr.astype(np.float64) / 257.0
    elif img.mode == "F":
        arr = arr.astype(np.float64)
        arr = arr * 255.0 if arr.size and arr.max() <= 1.0 else arr
    else:  # "I": 32-bit signed
        arr = arr.astype(np.float64)
        top = arr.max() if arr.size else 0
        if top > 65535:
            arr = arr * (255.0 / top)
        elif top > 255:
            arr = arr / 257.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited onto `background`."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = _high_bit_depth_to_uint8(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def load_image(source: str | os.PathLike | bytes, draft_size: int | None = None) -> Image.Image:
    """Fully decode an image file (or its bytes) into RGB; raises OSError/ValueError if corrupt.

    `draft_size`: when given, JPEGs are decoded at the smallest DCT scale whose sides are still
    at least this large (much faster for large photos that are downscaled anyway).
    """
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with Image.open(fp) as img:
        if draft_size and img.format == "JPEG" and img.mode in ("RGB", "L"):
            img.draft(img.mode, (draft_size, draft_size))
        img.load()  # forces the full decode: truncated files raise here
        ImageOps.exif_transpose(img, in_place=True)
        return to_rgb(img)


def to_float(img: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 RGB image -> HWC float32 array in [-1, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    return arr.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0)


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """HWC float array in [-1, 1] -> uint8 array."""
    return np.clip(np.rint((arr + 1.0) * 127.5), 0, 255).astype(np.uint8)


# ---- geometry ---------------------------------------------------------------------------------

def crop_box(w: int, h: int, cw: int, ch: int, rng: np.random.Generator | None) -> tuple[int, int, int, int]:
    """Box (left, top, right, bottom) of a crop: random when `rng` is given, else centred."""
    if rng is None:
        left, top = (w - cw) // 2, (h - ch) // 2
    else:
        left = int(rng.integers(0, w - cw + 1))
        top = int(rng.integers(0, h - ch + 1))
    return left, top, left + cw, top + ch


class ImageTransform:
    """Resize, square crop and horizontal flip of a PIL image, the way the original loaders do.

    Args:
        size: target of the resize step; None keeps the native resolution.
        crop_size: side of the square crop after resizing (defaults to `size`); None: no crop.
        random_crop: random crop position instead of the centre.
        flip_p: probability of a horizontal flip.
        interpolation: PIL filter name for resizing (`bicubic`, `bilinear`, `lanczos`, ...).
        mode: `resize_crop` (smaller side to `size`, then crop: taming's faces, ImageNet) or
            `crop_resize` (centre square crop, then resize to size x size: LSUN as in score-sde).
    """

    def __init__(self, size: int | None = None, crop_size: int | None = None, random_crop: bool = False,
                 flip_p: float = 0.0, interpolation: str = "bicubic", mode: str = "resize_crop") -> None:
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation '{interpolation}' unknown; use one of {sorted(INTERPOLATIONS)}")
        if mode not in ("resize_crop", "crop_resize"):
            raise ConfigError(f"transform mode '{mode}' unknown; use resize_crop or crop_resize")
        self.size = int(size) if size else None
        self.crop_size = int(crop_size) if crop_size else self.size
        self.random_crop = random_crop
        self.flip_p = float(flip_p)
        self.resample = INTERPOLATIONS[interpolation]
        self.mode = mode
        self.upscaled = WarnCounter("image smaller than the target size, resized up")

    @property
    def draft_size(self) -> int | None:
        """The smallest decode size that loses nothing (for JPEG draft decoding)."""
        return max(self.size or 0, self.crop_size or 0) or None

    def _resize_crop(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Smaller side to `size`, then the crop; only the cropped region is resampled."""
        w, h = img.size
        target = max(self.size or 0, self.crop_size or 0) if self.size or min(w, h) < (self.crop_size or 0) else 0
        if not target:
            return img
        scale = target / min(w, h)
        new_w, new_h = max(target, round(w * scale)), max(target, round(h * scale))
        if not self.crop_size:
            return img if (new_w, new_h) == (w, h) else img.resize((new_w, new_h), self.resample)
        c = self.crop_size
        left, top, _, _ = crop_box(new_w, new_h, c, c, rng if self.random_crop else None)
        sx, sy = new_w / w, new_h / h
        box = (left / sx, top / sy, (left + c) / sx, (top + c) / sy)
        return img.resize((c, c), self.resample, box=box, reducing_gap=3.0 if scale < 0.5 else None)

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None,
                 name: str = "") -> Image.Image:
        """Apply resize, crop and flip; `rng` drives random crops and flips (default: sample_rng)."""
        rng = rng if rng is not None else sample_rng()
        need = max(self.size or 0, self.crop_size or 0)
        if need and min(img.size) < need:
            self.upscaled(f"{name or 'image'} is {img.size[0]}x{img.size[1]}, needs {need}")
        if self.mode == "crop_resize":
            side = min(img.size)
            img = img.crop(crop_box(*img.size, side, side, rng if self.random_crop else None))
            if self.size:
                img = img.resize((self.size, self.size), resample=self.resample)
        else:
            img = self._resize_crop(img, rng)
        if self.crop_size and img.size != (self.crop_size, self.crop_size):
            img = img.crop(crop_box(*img.size, self.crop_size, self.crop_size,
                                    rng if self.random_crop else None))
        if self.flip_p > 0 and rng.random() < self.flip_p:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img


# ---- file lists -------------------------------------------------------------------------------

def list_images(root: str | os.PathLike, recursive: bool = True,
                extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
    """Sorted paths of the image files under `root` (recursively by default)."""
    exts = tuple(e.lower() for e in extensions)
    found: list[str] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames.sort()
            found.extend(os.path.join(dirpath, f) for f in filenames
                         if f.lower().endswith(exts) and not f.startswith("."))
    else:
        found = [os.path.join(root, f) for f in os.listdir(root)
                 if f.lower().endswith(exts) and not f.startswith(".")]
    return sorted(found)


def read_list_file(path: str | os.PathLike) -> list[str]:
    """Non-empty, stripped lines of a text list file."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def check_files_exist(paths: Iterable[str], source: str, show: int = 5) -> None:
    """Fail at start-up when a list names files that are not there (first few and the count)."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        first = ", ".join(missing[:show])
        raise MissingDataError(f"{source} names {len(missing)} missing file(s), first: {first}")


def require_dir(name: str, path: str | os.PathLike, layout: str) -> Path:
    """`path` as a Path if it is a directory, else the one-line missing-data error."""
    if not os.path.isdir(path):
        raise missing_data(name, path, layout)
    return Path(path)


def select_keys(example: dict, keys: Sequence[str] | None, key_map: Mapping[str, str] | None) -> dict:
    """Keep only `keys` (taming's filter) and rename by `key_map` (e.g. image->jpg for SD)."""
    if keys:
        example = {k: example[k] for k in keys}
    if key_map:
        example = {key_map.get(k, k): v for k, v in example.items()}
    return example


# ---- the map-style data set over files ---------------------------------------------------------

class ImagePaths:
    """Map-style data set over image files; skips unreadable files with a counted warning.

    Args:
        paths: absolute (or cwd-relative) image paths.
        transform: resize/crop/flip applied to each decoded image.
        labels: per-sample values to return with each image (`{"class_label": [...], ...}`).
        keys: if given, only these keys are returned (taming's `keys`).
        key_map: renames of returned keys, e.g. `{"image": "jpg", "caption": "txt"}`.
        loader: decodes one path to an RGB PIL image (defaults to `load_image`).
        max_skips: how many consecutive unreadable files to skip before giving up.
    """

    def __init__(self, paths: Sequence[str], transform: ImageTransform | None = None,
                 labels: Mapping[str, Sequence[Any]] | None = None, keys: Sequence[str] | None = None,
                 key_map: Mapping[str, str] | None = None,
                 loader: Callable[[str, int | None], Image.Image] | None = None,
                 max_skips: int = 100) -> None:
        self.paths = list(paths)
        self.transform = transform or ImageTransform()
        self.labels = {k: list(v) for k, v in (labels or {}).items()}
        for k, v in self.labels.items():
            if len(v) != len(self.paths):
                raise ValueError(f"label '{k}' has {len(v)} values for {len(self.paths)} files")
        self.keys = list(keys) if keys else None
        self.key_map = dict(key_map) if key_map else None
        self.loader = loader or load_image
        self.max_skips = max_skips
        self.skipped = WarnCounter(f"{type(self).__name__}: skipped unreadable image")
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_skipped(self) -> int:
        """How many unreadable files this process has skipped so far."""
        return self.skipped.count

    def load(self, i: int) -> Image.Image:
        """Decode sample `i`, sized for the transform."""
        return self.loader(self.paths[i], self.transform.draft_size)

    def example(self, i: int, img: Image.Image, rng: np.random.Generator | None) -> dict:
        """Build the sample dict from the decoded image (subclasses add task keys)."""
        ex = {k: v[i] for k, v in self.labels.items()}
        ex["file_path_"] = self.paths[i]
        ex["image"] = to_float(self.transform(img, rng, self.paths[i]))
        return ex

    def __getitem__(self, i: int) -> dict:
        n = len(self.paths)
        for attempt in range(self.max_skips + 1):
            j = (i + attempt) % n
            if j in self.bad:
                continue
            try:
                img = self.load(j)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                self.bad.add(j)
                self.skipped(f"{self.paths[j]} ({type(err).__name__}: {err})")
                continue
            return select_keys(self.example(j, img, None), self.keys, self.key_map)
        raise RuntimeError(f"{type(self).__name__}: {self.max_skips} unreadable files in a row "
                           f"from index {i}; is the data intact?")
