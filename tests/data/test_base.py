"""Decoding, conversion, transforms and the robustness rules of `ldm.data.base`."""
from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldm.data.base import (ImagePaths, ImageTransform, MissingDataError, check_files_exist, load_image,
                           to_float, to_uint8)
from ldm.util import ConfigError
from tests.data.layouts import image_array, write_corrupt, write_image


def _png_rgb16(path: Path, arr: np.ndarray) -> None:
    """Write a 48-bit (16 bits per channel) RGB PNG by hand (PIL cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_every_mode_becomes_8bit_rgb(tmp_path):
    rgb = image_array((20, 10))
    gray = rgb[..., 0]
    cases = {
        "gray.png": Image.fromarray(gray, "L"),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full(gray.shape, 255, np.uint8)]), "RGBA"),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "gray16.png": Image.fromarray(gray.astype(np.uint16) * 257),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "bw.png": Image.fromarray(gray > 128),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
    for name in cases:
        out = load_image(tmp_path / name)
        assert out.mode == "RGB" and out.size == (20, 10), name
    gray16 = np.asarray(load_image(tmp_path / "gray16.png"))
    assert np.abs(gray16[..., 0].astype(int) - gray).max() <= 1  # 16 bit scaled, not clipped at 255
    assert np.asarray(load_image(tmp_path / "gray.png"))[..., 2].tolist() == gray.tolist()


def test_sixteen_bit_rgb_png_is_scaled(tmp_path):
    arr = (image_array((12, 8)).astype(np.uint16) * 257)
    _png_rgb16(tmp_path / "rgb16.png", arr)
    out = np.asarray(load_image(tmp_path / "rgb16.png"))
    assert out.dtype == np.uint8 and np.abs(out.astype(int) - arr // 257).max() <= 1


def test_transparent_pixels_are_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red-ish, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_image(tmp_path / "a.png"))
    assert out[0, 0].tolist() == [200, 0, 0] and out[3, 0].tolist() == [255, 255, 255]


def test_float_conversion_range():
    x = to_float(np.array([[[0, 128, 255]]], np.uint8))
    assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 1.0
    assert to_uint8(x).tolist() == [[[0, 128, 255]]]


def test_transform_sizes_and_modes():
    img = Image.fromarray(image_array((80, 40)))
    assert ImageTransform(size=32)(img).size == (32, 32)
    assert ImageTransform(size=32, crop_size=None)(img).size == (32, 32)
    assert ImageTransform(size=20, crop_size=16, random_crop=True)(img).size == (16, 16)
    assert ImageTransform(size=32, mode="crop_resize")(img).size == (32, 32)
    assert ImageTransform()(img).size == (80, 40)
    flipped = ImageTransform(flip_p=1.0)(img)
    assert np.array_equal(np.asarray(flipped), np.asarray(img)[:, ::-1])
    with pytest.raises(ConfigError, match="interpolation"):
        ImageTransform(interpolation="cubic-ish")


def test_small_images_are_resized_up_with_a_warning(caplog):
    t = ImageTransform(size=64)
    with caplog.at_level(logging.WARNING):
        out = t(Image.fromarray(image_array((30, 20))), name="tiny.png")
    assert out.size == (64, 64)
    assert "resized up" in caplog.text and "tiny.png" in caplog.text and t.upscaled.count == 1


def test_corrupt_files_are_skipped_and_counted(tmp_path, caplog):
    good = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    bad = write_corrupt(tmp_path / "bad.jpg")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"definitely not an image")
    paths = [str(good[0]), str(bad), str(garbage), str(good[1]), str(good[2])]
    ds = ImagePaths(paths, ImageTransform(size=16))
    with caplog.at_level(logging.WARNING):
        out = [ds[i] for i in range(len(ds))]
    assert ds.num_skipped == 2
    assert "bad.jpg" in caplog.text and "garbage.png" in caplog.text and "2 so far" in caplog.text
    assert [o["file_path_"] for o in out] == [paths[0], paths[3], paths[3], paths[3], paths[4]]
    assert all(o["image"].shape == (16, 16, 3) and o["image"].dtype == np.float32 for o in out)


def test_all_corrupt_gives_up_with_a_clear_error(tmp_path):
    paths = [str(write_corrupt(tmp_path / f"{i}.jpg")) for i in range(3)]
    with pytest.raises(RuntimeError, match="unreadable files in a row"):
        ImagePaths(paths, max_skips=2)[0]


def test_missing_files_fail_at_start_naming_the_first(tmp_path):
    paths = [str(tmp_path / f"missing{i}.png") for i in range(7)]
    with pytest.raises(MissingDataError) as err:
        check_files_exist(paths, "list.txt", show=2)
    msg = str(err.value)
    assert "7 missing" in msg and "missing0.png" in msg and "missing1.png" in msg and "missing2" not in msg
    assert "\n" not in msg


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(image_array((30, 20))).save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (20, 30)


def test_resize_then_crop_matches_resampling_the_crop_region():
    img = Image.fromarray(image_array((90, 60)))
    out = np.asarray(ImageTransform(size=30)(img)).astype(float)
    ref = np.asarray(img.resize((45, 30), Image.Resampling.BICUBIC).crop((7, 0, 37, 30))).astype(float)
    assert out.shape == (30, 30, 3) and np.abs(out - ref).mean() < 3
