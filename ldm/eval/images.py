"""Image inputs for evaluation: folders, `.npz` sample files and data-set configs.

Every source yields uint8 RGB tensors [3, H, W] in a fixed order, and batches of equal-sized
images. Folders are read like torch-fidelity reads them (PIL, converted to RGB, sorted file
names; here sorted "naturally", so that `10.png` follows `9.png`). `.npz` files hold images in
`arr_0` as `sample_diffusion.py` and the ADM evaluator write them (NHWC uint8), read in chunks
so that 50k samples need not fit in memory; a folder of such files is read in numbered order.
A data-set config (a YAML file or mapping whose root is a `target` node, or a training config
whose `data.params.<split>` is used) builds a data set whose items hold `image` as HWC floats
in [-1, 1], the convention of `ldm.data`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class InputError(ValueError):
    """A bad evaluation input (missing path, unreadable file, wrong layout); one-line message."""


def natural_key(path: str | Path) -> list:
    """Sort key that orders embedded numbers numerically (`9.png` before `10.png`)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def list_image_files(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Image files under `folder`, in natural order."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    files = [p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.relative_to(folder)))


def to_uint8_chw(image: Any, float_range: tuple[float, float] | None = (-1.0, 1.0)) -> torch.Tensor:
    """Convert an HWC/CHW array, tensor or PIL image to uint8 RGB [3, H, W].

    Floats are mapped from `float_range` to 0..255 and rounded (they came from uint8 images, so
    rounding, not truncation, restores them); `float_range=None` guesses [-1, 1], [0, 1] or
    [0, 255] from the values.
    """
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise InputError(f"expected an image with 2 or 3 dimensions, got shape {array.shape}")
    if array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        lo, hi = float_range if float_range is not None else _guess_range(array)
        array = np.clip(np.round((array - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        array = array[..., :3]
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # e.g. views of np.frombuffer / PIL buffers
        array = array.copy()
    return torch.from_numpy(array).permute(2, 0, 1)


def _guess_range(array: np.ndarray) -> tuple[float, float]:
    if array.min() < 0:
        return (-1.0, 1.0)
    return (0.0, 1.0) if array.max() <= 1.0 else (0.0, 255.0)


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as uint8 RGB [3, H, W] (PIL `convert("RGB")`, like torch-fidelity)."""
    try:
        with Image.open(path) as img:
            return to_uint8_chw(img)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read image {path}: {err}") from err


class ImageSource(ABC):
    """An ordered collection of images that can be read in batches."""

    kind: str = "images"

    def __init__(self, description: str) -> None:
        self.description = description

    @abstractmethod
    def __len__(self) -> int:
        """Number of images."""

    @abstractmethod
    def iter_images(self) -> Iterator[torch.Tensor]:
        """Yield uint8 [3, H, W] images in order."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A string that changes when the images change (used as a cache key)."""

    def captions(self) -> list[str] | None:
        """One caption per image, when the source has them."""
        return None

    def iter_batches(self, batch_size: int, limit: int | None = None) -> Iterator[torch.Tensor]:
        """Yield uint8 [B, 3, H, W] batches of at most `batch_size` equal-sized images."""
        pending: list[torch.Tensor] = []
        for count, image in enumerate(self.iter_images()):
            if limit is not None and count >= limit:
                break
            if pending and (len(pending) == batch_size or pending[0].shape != image.shape):
                yield torch.stack(pending)
                pending = []
            pending.append(image)
        if pending:
            yield torch.stack(pending)


class FolderSource(ImageSource):
    """Image files of a folder (recursively), in natural order."""

    kind = "folder"

    def __init__(self, folder: str | Path, recursive: bool = True) -> None:
        super().__init__(str(folder))
        self.folder = Path(folder)
        self.files = list_image_files(self.folder, recursive)
        if not self.files:
            raise InputError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {self.folder}")

    def __len__(self) -> int:
        return len(self.files)

    def iter_images(self) -> Iterator[torch.Tensor]:
        for path in self.files:
            yield load_image(path)

    def fingerprint(self) -> str:
        digest = hashlib.sha1(str(self.folder.resolve()).encode())
        for path in self.files:
            stat = path.stat()
            digest.update(f"{path.relative_to(self.folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()

    def captions(self) -> list[str] | None:
        """Same-name `.txt` files next to the images (the folder-with-captions layout)."""
        texts = [p.with_suffix(".txt") for p in self.files]
        if not all(t.is_file() for t in texts):
            return None
        return [t.read_text().strip() for t in texts]


def _npz_header(zf: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    with zf.open(name) as f:
        version = np.lib.format.read_magic(f)
        reader = {(1, 0): np.lib.format.read_array_header_1_0,
                  (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            raise InputError(f"unsupported .npy version {version} in {zf.filename}:{name}")
        shape, fortran, dtype = reader(f)
    return shape, dtype, fortran


class NpzSource(ImageSource):
    """Images stored as a 4-D array (NHWC or NCHW) in one or more `.npz` files."""

    kind = "npz"

    def __init__(self, files: list[Path], key: str | None = None, chunk: int = 256) -> None:
        super().__init__(str(files[0]) if len(files) == 1 else f"{files[0].parent} ({len(files)} .npz)")
        self.files, self.chunk = files, chunk
        self.entries: list[tuple[Path, str, tuple[int, ...]]] = []
        for path in files:
            try:
                with zipfile.ZipFile(path) as zf:
                    names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
                    name = key if key is not None else ("arr_0" if "arr_0" in names else None)
                    if name is None:  # the first 4-D array
                        name = next((n for n in names if len(_npz_header(zf, n + ".npy")[0]) == 4), None)
                    if name is None or name not in names:
                        raise InputError(f"{path} holds no image array (arrays: {', '.join(names)})")
                    shape, _, _ = _npz_header(zf, name + ".npy")
            except (zipfile.BadZipFile, OSError) as err:
                raise InputError(f"cannot read {path} as .npz: {err}") from err
            if len(shape) != 4:
                raise InputError(f"{path}:{name} has shape {shape}; expected [N, H, W, C] or [N, C, H, W]")
            self.entries.append((path, name, shape))

    def __len__(self) -> int:
        return sum(shape[0] for _, _, shape in self.entries)

    def _chunks(self, path: Path, name: str) -> Iterator[np.ndarray]:
        with zipfile.ZipFile(path) as zf:
            shape, dtype, fortran = _npz_header(zf, name + ".npy")
            if fortran or dtype.hasobject:
                with np.load(path, allow_pickle=False) as data:
                    array = data[name]
                for start in range(0, shape[0], self.chunk):
                    yield array[start:start + self.chunk]
                return
            row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
            with zf.open(name + ".npy") as f:
                version = np.lib.format.read_magic(f)  # skip the header to the raw rows
                (np.lib.format.read_array_header_1_0 if version == (1, 0)
                 else np.lib.format.read_array_header_2_0)(f)
                for start in range(0, shape[0], self.chunk):
                    rows = min(self.chunk, shape[0] - start)
                    data = f.read(rows * row_bytes)
                    if len(data) != rows * row_bytes:
                        raise InputError(f"{path}:{name} is truncated")
                    yield np.frombuffer(data, dtype=dtype).reshape(rows, *shape[1:])

    def iter_images(self) -> Iterator[torch.Tensor]:
        float_range = None
        for path, name, _ in self.entries:
            for chunk in self._chunks(path, name):
                if chunk.dtype != np.uint8 and float_range is None:
                    float_range = _guess_range(chunk.astype(np.float64))
                    logger.warning("%s holds %s images; treating values as the range %s",
                                   path, chunk.dtype, float_range)
                for image in chunk:
                    yield to_uint8_chw(image, float_range)

    def fingerprint(self) -> str:
        digest = hashlib.sha1()
        for path in self.files:
            stat = path.stat()
            digest.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()


class DatasetSource(ImageSource):
    """Images of a data set built from a config node (`target` + `params`)."""

    kind = "dataset"

    def __init__(self, config: Mapping | str | Path, split: str = "validation",
                 image_key: str = "image") -> None:
        from omegaconf import OmegaConf

        from ldm.util import instantiate_from_config

        where = str(config) if isinstance(config, (str, Path)) else "dataset config"
        try:
            root = OmegaConf.load(config) if isinstance(config, (str, Path)) else OmegaConf.create(dict(config))
        except Exception as err:
            raise InputError(f"cannot read data-set config {where}: {str(err).splitlines()[0]}") from err
        node = root
        if "target" not in root:
            node = OmegaConf.select(root, f"data.params.{split}")
            if node is None:
                raise InputError(f"{where}: neither a data-set node (target) nor a config with data.params.{split}")
        self.config = OmegaConf.to_container(node, resolve=True)
        super().__init__(f"{where} [{self.config.get('target')}]")
        try:
            self.dataset = instantiate_from_config(self.config, path=where)
        except ValueError as err:  # ldm.util.ConfigError is a ValueError with a one-line message
            raise InputError(str(err)) from err
        except (OSError, RuntimeError, KeyError) as err:  # e.g. the data set's files are absent
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(f"cannot build the data set of {where}: {first}") from err
        self.image_key = image_key

    def __len__(self) -> int:
        return len(self.dataset)

    def iter_images(self) -> Iterator[torch.Tensor]:
        for index in range(len(self)):
            item = self.dataset[index]
            if isinstance(item, Mapping):
                if self.image_key not in item:
                    raise InputError(f"data-set items have no '{self.image_key}' key "
                                     f"(keys: {', '.join(map(str, item))}); set the image key")
                item = item[self.image_key]
            elif isinstance(item, (tuple, list)):
                item = item[0]
            yield to_uint8_chw(item, (-1.0, 1.0))

    def fingerprint(self) -> str:
        text = json.dumps(self.config, sort_keys=True, default=str) + f":{len(self)}"
        return hashlib.sha1(text.encode()).hexdigest()

    def captions(self) -> list[str] | None:
        return None


def is_stats_file(path: str | Path) -> bool:
    """True for an .npz holding `mu`/`sigma` and no image array (FID statistics)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
    except (zipfile.BadZipFile, OSError):
        return False
    return {"mu", "sigma"} <= names and "arr_0" not in names


def open_image_source(spec: str | os.PathLike | Mapping, split: str = "validation",
                      image_key: str = "image", recursive: bool = True) -> ImageSource:
    """Open a folder, an `.npz` (or a folder of them), or a data-set config (YAML or mapping)."""
    if isinstance(spec, Mapping):
        return DatasetSource(spec, split, image_key)
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        if list_image_files(path, recursive):
            return FolderSource(path, recursive)
        npz = sorted(path.glob("*.npz"), key=natural_key)
        if npz:
            return NpzSource(npz)
        raise InputError(f"no images or .npz files in {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return NpzSource([path])
    if suffix in (".yaml", ".yml", ".json"):
        return DatasetSource(path, split, image_key)
    if suffix in IMAGE_EXTENSIONS:
        raise InputError(f"{path} is a single image; pass the folder that holds the images")
    raise InputError(f"cannot evaluate {path}: expected a folder, an .npz or a .yaml data-set config")
