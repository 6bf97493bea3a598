"""Low-resolution degradations for super-resolution pairs, written with numpy/scipy/torch/PIL.

`bsrgan` and `bsrgan_light` follow the BSRGAN degradation model (Zhang et al., "Designing a
Practical Degradation Model for Deep Blind Image Super-Resolution", ICCV 2021) as the original
`ldm/modules/image_degradation/bsrgan{,_light}.py` apply it: blur (isotropic or anisotropic
Gaussian), random downsampling, Gaussian noise and JPEG compression in a shuffled order, then a
final JPEG. OpenCV's resizes are reproduced with torch (`cv_*`: bilinear/bicubic without
antialiasing, area as average pooling, like cv2.INTER_LINEAR/CUBIC/AREA); the camera-ISP step
was disabled in the original (no ISP model) and is left out here. All randomness comes from a
numpy Generator so validation pairs can be deterministic.

`get_degradation(name, sf)` returns `fn(uint8 HWC image, rng) -> uint8 LR image` for any of:
`bsrgan` (alias `bsrgani`, the original's spelling), `bsrgan_light`, `pil_{nearest,bilinear,
bicubic,box,hamming,lanczos}`, `cv_{nearest,bilinear,bicubic,area,lanczos}` and the plain
`nearest`, `bilinear`, `bicubic`, `area`, `lanczos`.
"""
from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from scipy.linalg import orth

from ldm.util import ConfigError

Degradation = Callable[[np.ndarray, np.random.Generator], np.ndarray]

_PIL = {
    "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC, "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING, "lanczos": Image.Resampling.LANCZOS,
    "area": Image.Resampling.BOX,
}
_CV = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": "bicubic", "area": "area",
       "lanczos": "lanczos"}


# ---- kernels ----------------------------------------------------------------------------------

def fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    """Isotropic Gaussian kernel as MATLAB's fspecial('gaussian', size, sigma)."""
    sigma = max(float(sigma), 1e-3)
    r = (size - 1) / 2.0
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    k = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    k[k < np.finfo(float).eps * k.max()] = 0
    return k / k.sum()


def anisotropic_gaussian(ksize: int, theta: float, l1: float, l2: float) -> np.ndarray:
    """Anisotropic Gaussian kernel with eigenvalues l1, l2 rotated by theta (BSRGAN)."""
    v = np.array([np.cos(theta), np.sin(theta)])
    basis = np.array([[v[0], v[1]], [v[1], -v[0]]])
    cov = basis @ np.diag([max(l1, 1e-3), max(l2, 1e-3)]) @ np.linalg.inv(basis)
    center = ksize / 2.0 + 0.5
    ys, xs = np.mgrid[0:ksize, 0:ksize]
    pts = np.stack([xs - center + 1, ys - center + 1], axis=-1)
    inv = np.linalg.inv(cov)
    k = np.exp(-0.5 * np.einsum("...i,ij,...j->...", pts, inv, pts))
    return k / k.sum()


def shift_pixel(k: np.ndarray, sf: int) -> np.ndarray:
    """Shift a kernel by (sf - 1) / 2 pixels towards the upper left (BSRGAN's shift_pixel)."""
    shift = (sf - 1) * 0.5
    return ndimage.shift(k, (-shift, -shift), order=1, mode="nearest")


# ---- resizing -----------------------------------------------------------------------------------

def cv_resize(img: np.ndarray, width: int, height: int, method: str) -> np.ndarray:
    """Resize an HWC float image like cv2.resize (no antialiasing), done with torch."""
    if method == "lanczos":
        return pil_resize(img, width, height, "lanczos")
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    if method == "area":
        out = F.adaptive_avg_pool2d(t, (height, width))
    elif method == "nearest":
        out = F.interpolate(t, size=(height, width), mode="nearest")
    else:
        out = F.interpolate(t, size=(height, width), mode=method, align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


def pil_resize(img: np.ndarray, width: int, height: int, method: str) -> np.ndarray:
    """Resize an HWC float image channel by channel with PIL (antialiased like MATLAB)."""
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32))
                        .resize((width, height), resample=_PIL[method])) for c in range(img.shape[2])]
    return np.stack(chans, axis=-1)


def _random_cv(rng: np.random.Generator) -> str:
    """cv2's interpolation flag random.choice([1, 2, 3]): linear, cubic or area."""
    return ("bilinear", "bicubic", "area")[int(rng.integers(0, 3))]


# ---- degradation steps --------------------------------------------------------------------------

def add_blur(img: np.ndarray, sf: int, rng: np.random.Generator, light: bool = False) -> np.ndarray:
    """Blur with a random isotropic or anisotropic Gaussian kernel."""
    wd2, wd = 4.0 + sf, 2.0 + 0.2 * sf
    if light:
        wd2, wd = wd2 / 4, wd / 4
    if rng.random() < 0.5:
        ksize = int(rng.integers(2, 12)) + 3 if light else 2 * int(rng.integers(2, 12)) + 3
        k = anisotropic_gaussian(ksize, rng.random() * np.pi, wd2 * rng.random(), wd2 * rng.random())
    else:
        ksize = int(rng.integers(2, 5)) + 3 if light else 2 * int(rng.integers(2, 12)) + 3
        k = fspecial_gaussian(ksize, wd * rng.random())
    return ndimage.convolve(img, k[:, :, None], mode="mirror")


def add_gaussian_noise(img: np.ndarray, rng: np.random.Generator, lo: int, hi: int) -> np.ndarray:
    """Colour, grayscale or channel-correlated Gaussian noise of level lo..hi (of 255)."""
    level = int(rng.integers(lo, hi + 1)) / 255.0
    r = rng.random()
    if r > 0.6:
        img = img + rng.normal(0, level, img.shape).astype(np.float32)
    elif r < 0.4:
        img = img + rng.normal(0, level, (*img.shape[:2], 1)).astype(np.float32)
    else:
        big = hi / 255.0
        u = orth(rng.random((3, 3)))
        cov = np.abs(big ** 2 * (u.T @ np.diag(rng.random(3)) @ u))
        img = img + rng.multivariate_normal(np.zeros(3), cov, img.shape[:2]).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def add_jpeg_noise(img: np.ndarray, rng: np.random.Generator, qmin: int, qmax: int) -> np.ndarray:
    """Round-trip through JPEG at a random quality in qmin..qmax."""
    quality = int(rng.integers(qmin, qmax + 1))
    buf = io.BytesIO()
    Image.fromarray(_to_uint8(img)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def degradation_bsrgan(image: np.ndarray, sf: int, rng: np.random.Generator,
                       light: bool = False) -> np.ndarray:
    """BSRGAN degradation of a uint8 HWC image to 1/sf of its size (`light`: bsrgan_light)."""
    img = image.astype(np.float32) / 255.0
    h1, w1 = img.shape[:2]
    img = img[:h1 - h1 % sf, :w1 - w1 % sf]  # mod crop
    h, w = img.shape[:2]
    if sf == 4 and rng.random() < 0.25:  # downsample1
        if rng.random() < 0.5:
            img = cv_resize(img, w // 2, h // 2, _random_cv(rng))
        else:
            img = pil_resize(img, w // 2, h // 2, "bicubic")
        img = np.clip(img, 0.0, 1.0)
        sf = 2
    order = list(rng.permutation(7))
    i2, i3 = order.index(2), order.index(3)
    if i2 > i3:  # keep downsample3 after downsample2
        order[i2], order[i3] = order[i3], order[i2]
    size_before = img.shape[1], img.shape[0]
    for step in order:
        if step == 0 or (step == 1 and not light):
            img = add_blur(img, sf, rng, light)
        elif step == 2:  # downsample2
            size_before = img.shape[1], img.shape[0]
            if rng.random() < (0.8 if light else 0.75):
                sf1 = rng.uniform(1, 2 * sf)
                img = cv_resize(img, max(1, int(img.shape[1] / sf1)), max(1, int(img.shape[0] / sf1)),
                                _random_cv(rng))
            else:
                k = fspecial_gaussian(25, rng.uniform(0.1, 0.6 * sf))
                k = shift_pixel(k, sf)
                k = k / k.sum()
                img = ndimage.convolve(img, k[:, :, None], mode="mirror")[0::sf, 0::sf]
            img = np.clip(img, 0.0, 1.0)
        elif step == 3:  # downsample3, to 1/sf of the size before downsample2
            img = cv_resize(img, int(size_before[0] / sf), int(size_before[1] / sf), _random_cv(rng))
            img = np.clip(img, 0.0, 1.0)
        elif step == 4:
            img = add_gaussian_noise(img, rng, 1, 2) if light else add_gaussian_noise(img, rng, 2, 25)
        elif step == 5 and rng.random() < 0.9:
            img = add_jpeg_noise(img, rng, 80 if light else 30, 95)
    img = add_jpeg_noise(img, rng, 80 if light else 30, 95)
    return _to_uint8(img)


class ResizeDegradation:
    """Plain downscaling by `sf` with a PIL (`pil_*`, plain names) or cv2-like (`cv_*`) filter."""

    def __init__(self, name: str, sf: int) -> None:
        library, _, method = name.rpartition("_")
        table = _CV if library == "cv" else _PIL
        if library not in ("", "pil", "cv") or method not in table:
            raise ConfigError(f"degradation '{name}' unknown; use bsrgan, bsrgan_light, pil_<filter>, "
                              f"cv_<filter> or one of {sorted(_PIL)}")
        self.cv, self.method, self.sf = library == "cv", table[method], int(sf)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = image.shape[:2]
        if self.cv:
            out = cv_resize(image.astype(np.float32), w // self.sf, h // self.sf, self.method)
            return np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return np.asarray(Image.fromarray(image).resize((w // self.sf, h // self.sf), resample=self.method))


class BSRGANDegradation:
    """`degradation_bsrgan` as a picklable callable (DataLoader workers may be spawned)."""

    def __init__(self, sf: int, light: bool) -> None:
        self.sf, self.light = int(sf), light

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return degradation_bsrgan(image, self.sf, rng, light=self.light)


def get_degradation(name: str | None, sf: int) -> Degradation:
    """The degradation `fn(uint8 HWC, rng) -> uint8 LR` named `name` for scale factor `sf`."""
    if name in ("bsrgan", "bsrgani"):
        return BSRGANDegradation(sf, light=False)
    if name == "bsrgan_light":
        return BSRGANDegradation(sf, light=True)
    return ResizeDegradation(name or "bicubic", sf)
