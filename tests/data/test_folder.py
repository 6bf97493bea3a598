"""Your-own-data loaders: image folder, captioned folder, CSV/JSONL lists, class folders."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ldm.data.base import MissingDataError
from ldm.data.folder import ClassFolder, ImageCaptionFolder, ImageCaptionList, ImageFolder
from tests.data.layouts import write_corrupt, write_image


def _check_image(ex: dict, size: int) -> None:
    img = ex["image"]
    assert img.shape == (size, size, 3) and img.dtype == np.float32
    assert -1.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.05


def test_image_folder_is_recursive_and_reads_every_format(tmp_path):
    write_image(tmp_path / "a.png", seed=1)
    write_image(tmp_path / "sub" / "b.jpg", seed=2, format="JPEG")
    write_image(tmp_path / "sub" / "deeper" / "c.webp", seed=3)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = ImageFolder(str(tmp_path), size=32, random_crop=True, flip_p=0.5)
    assert len(ds) == 3
    assert sorted(ds.labels["relative_file_path_"]) == ["a.png", "sub/b.jpg", "sub/deeper/c.webp"]
    for i in range(3):
        _check_image(ds[i], 32)


def test_image_folder_key_map_for_stable_diffusion(tmp_path):
    write_image(tmp_path / "a.png")
    ex = ImageFolder(str(tmp_path), size=16, key_map={"image": "jpg"})[0]
    assert "jpg" in ex and "image" not in ex


def test_missing_folder_is_a_one_line_error_with_the_layout(tmp_path):
    with pytest.raises(MissingDataError) as err:
        ImageFolder(str(tmp_path / "nope"))
    msg = str(err.value)
    assert "nope" in msg and "expected layout" in msg and "\n" not in msg
    with pytest.raises(MissingDataError):
        ImageFolder(str(tmp_path))  # exists but holds no image


def test_caption_folder_pairs_same_name_txt(tmp_path):
    write_image(tmp_path / "cat.jpg", format="JPEG")
    (tmp_path / "cat.txt").write_text("a  cat\non a mat\n")
    write_image(tmp_path / "d" / "dog.png", seed=1)
    (tmp_path / "d" / "dog.txt").write_text("a dog")
    ds = ImageCaptionFolder(str(tmp_path), size=24)
    got = {ds[i]["caption"] for i in range(len(ds))}
    assert got == {"a cat on a mat", "a dog"}
    _check_image(ds[0], 24)


def test_caption_folder_missing_caption(tmp_path):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    (tmp_path / "a.txt").write_text("first")
    with pytest.raises(MissingDataError, match=r"1 missing file.*b\.txt"):
        ImageCaptionFolder(str(tmp_path))
    ds = ImageCaptionFolder(str(tmp_path), require_captions=False, size=8)
    assert [ds[i]["caption"] for i in range(2)] == ["first", ""]


def test_csv_and_jsonl_caption_lists(tmp_path):
    write_image(tmp_path / "imgs" / "0.png")
    write_image(tmp_path / "imgs" / "1.jpg", seed=1, format="JPEG")
    (tmp_path / "list.csv").write_text('path,caption\nimgs/0.png,"a red, round thing"\nimgs/1.jpg,second\n')
    ds = ImageCaptionList(str(tmp_path / "list.csv"), size=16)
    assert [ds[i]["caption"] for i in range(2)] == ["a red, round thing", "second"]
    _check_image(ds[1], 16)
    rows = [{"file": str(tmp_path / "imgs" / "0.png"), "text": "absolute"}, {"file": "imgs/1.jpg", "text": "rel"}]
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = ImageCaptionList(str(tmp_path / "list.jsonl"), path_column="file", caption_column="text", size=16,
                          key_map={"image": "jpg", "caption": "txt"})
    assert ds[0]["txt"] == "absolute" and ds[1]["jpg"].shape == (16, 16, 3)


def test_caption_list_naming_missing_files_fails_at_start(tmp_path):
    write_image(tmp_path / "ok.png")
    lines = ["path,caption", "ok.png,fine"] + [f"gone{i}.png,x" for i in range(12)]
    (tmp_path / "list.csv").write_text("\n".join(lines))
    with pytest.raises(MissingDataError) as err:
        ImageCaptionList(str(tmp_path / "list.csv"))
    assert "12 missing" in str(err.value) and "gone0.png" in str(err.value)


def test_class_folders(tmp_path):
    for cls, n in (("cats", 2), ("dogs", 3)):
        for i in range(n):
            write_image(tmp_path / cls / f"{i}.png", seed=i)
    write_corrupt(tmp_path / "dogs" / "broken.jpg")
    ds = ClassFolder(str(tmp_path), size=16)
    assert ds.classes == ["cats", "dogs"] and len(ds) == 6
    labels = [(ds[i]["class_label"], ds[i]["human_label"]) for i in range(len(ds))]
    assert labels[:5] == [(0, "cats")] * 2 + [(1, "dogs")] * 3
    assert labels[5] == (0, "cats")  # the broken file (last) is skipped to the next sample, wrapping
    assert ds.num_skipped == 1


def test_grayscale_and_rgba_files_in_a_folder(tmp_path):
    Image.new("L", (20, 20), 100).save(tmp_path / "g.png")
    Image.new("RGBA", (20, 20), (10, 20, 30, 255)).save(tmp_path / "r.png")
    ds = ImageFolder(str(tmp_path), size=8)
    for i in range(2):
        assert ds[i]["image"].shape == (8, 8, 3)
