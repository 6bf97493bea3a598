"""Evaluation inputs: image folders, .npz sample files, data-set configs, statistics files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ldm.eval.images import (
    DatasetSource,
    FolderSource,
    InputError,
    NpzSource,
    is_stats_file,
    open_image_source,
    to_uint8_chw,
)


class TinyDataset:
    """Items like ldm.data's: {"image": HWC float32 in [-1, 1]}."""

    def __init__(self, n: int = 5, size: int = 8) -> None:
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i].astype(np.float32) / 127.5 - 1.0, "caption": str(i)}


def _write_pngs(folder, images) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")


def test_folder_is_read_in_natural_order_and_batched(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (12, 6, 5, 3)).astype(np.uint8)
    _write_pngs(tmp_path / "imgs", images)
    Image.fromarray(images[0]).convert("L").save(tmp_path / "imgs" / "12.png")  # grayscale
    source = open_image_source(tmp_path / "imgs")
    assert isinstance(source, FolderSource) and len(source) == 13
    assert [p.name for p in source.files[:3]] == ["0.png", "1.png", "2.png"]
    assert source.files[10].name == "10.png"
    batches = list(source.iter_batches(5))
    assert [len(b) for b in batches] == [5, 5, 3] and batches[0].dtype == torch.uint8
    torch.testing.assert_close(batches[2][0], torch.from_numpy(images[10]).permute(2, 0, 1))
    assert batches[2][2].shape == (3, 6, 5)  # gray -> RGB
    assert [len(b) for b in source.iter_batches(5, limit=7)] == [5, 2]


def test_batches_split_where_the_image_size_changes(tmp_path):
    _write_pngs(tmp_path / "a", [np.zeros((4, 4, 3), np.uint8)] * 2)
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "a" / "2.png")
    assert [tuple(b.shape) for b in open_image_source(tmp_path / "a").iter_batches(8)] == \
        [(2, 3, 4, 4), (1, 3, 6, 6)]


def test_npz_samples_in_nhwc_and_nchw_and_folders_of_them(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (7, 8, 8, 3)).astype(np.uint8)
    np.savez(tmp_path / "samples.npz", images)  # arr_0, as sample_diffusion.py writes it
    source = NpzSource([tmp_path / "samples.npz"], chunk=3)
    got = torch.cat(list(source.iter_batches(4)))
    torch.testing.assert_close(got, torch.from_numpy(images).permute(0, 3, 1, 2))
    np.savez_compressed(tmp_path / "nchw.npz", images=images.transpose(0, 3, 1, 2))
    got = torch.cat(list(open_image_source(tmp_path / "nchw.npz").iter_batches(10)))
    torch.testing.assert_close(got, torch.from_numpy(images).permute(0, 3, 1, 2))
    folder = tmp_path / "numpy"
    folder.mkdir()
    np.savez(folder / "10-3x8x8x3-samples.npz", images[4:])
    np.savez(folder / "2-4x8x8x3-samples.npz", images[:4])
    source = open_image_source(folder)
    assert isinstance(source, NpzSource) and len(source) == 7
    torch.testing.assert_close(torch.cat(list(source.iter_batches(7))),
                               torch.from_numpy(images).permute(0, 3, 1, 2))


def test_float_images_are_rounded_back_to_uint8():
    image = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)[..., None].repeat(3, -1)
    as_float = image.astype(np.float32) / 127.5 - 1.0  # 254.99998 must come back as 255
    assert torch.equal(to_uint8_chw(as_float), torch.from_numpy(image).permute(2, 0, 1))


def test_dataset_config_is_the_reference_side(tmp_path):
    config = {"target": "tests.eval.test_images.TinyDataset", "params": {"n": 5}}
    source = open_image_source(config)
    assert isinstance(source, DatasetSource) and len(source) == 5
    got = torch.cat(list(source.iter_batches(2)))
    torch.testing.assert_close(got, torch.from_numpy(TinyDataset().images).permute(0, 3, 1, 2))
    yaml = tmp_path / "train.yaml"
    yaml.write_text("data:\n  params:\n    train:\n      target: tests.eval.test_images.TinyDataset\n"
                    "      params:\n        n: 3\n")
    assert len(open_image_source(yaml, split="train")) == 3
    with pytest.raises(InputError, match="data.params.validation"):
        open_image_source(yaml, split="validation")
    with pytest.raises(InputError, match="cannot import"):
        open_image_source({"target": "tests.eval.nowhere.Data"})


def test_stats_files_are_recognised(tmp_path):
    np.savez(tmp_path / "stats.npz", mu=np.zeros(2), sigma=np.eye(2))
    np.savez(tmp_path / "adm_ref.npz", arr_0=np.zeros((2, 4, 4, 3), np.uint8), mu=np.zeros(2),
             sigma=np.eye(2))
    assert is_stats_file(tmp_path / "stats.npz") and not is_stats_file(tmp_path / "adm_ref.npz")


def _empty_dir(p):
    (p / "empty").mkdir()
    return p / "empty"


def _text_file(p):
    (p / "x.txt").write_text("hi")
    return p / "x.txt"


def _broken_npz(p):
    (p / "bad.npz").write_bytes(b"not a zip")
    return p / "bad.npz"


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "absent", "not found"),
    (_empty_dir, "no images"),
    (_text_file, "expected a folder"),
    (_broken_npz, "cannot read"),
])
def test_bad_inputs_raise_one_line_errors(tmp_path, make, message):
    with pytest.raises(InputError, match=message) as err:
        open_image_source(make(tmp_path))
    assert "\n" not in str(err.value)
