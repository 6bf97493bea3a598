"""Every data target of the released configs and of ours instantiates with the params they give."""
from __future__ import annotations

import glob
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from torch.utils.data import IterableDataset

from ldm.data.base import UnreleasedDatasetError
from ldm.util import instantiate_from_config, resolve_target
from tests.conftest import REFERENCE_DIR, REPO_ROOT
from tests.data.layouts import (make_coco, make_cocostuff, make_faces, make_folder_for, make_imagenet, make_lsun,
                                make_openimages, make_places, write_shards)

UNRELEASED = {"ldm.data.previews.pytorch_dataset.PreviewsTrain", "ldm.data.previews.pytorch_dataset.PreviewsValidation",
              "ldm.data.landscapes.RFWTrain", "ldm.data.landscapes.RFWValidation"}
NOT_OURS = ("ldm.data.cached_latents.", "ldm.data.datamodule.")  # tested by their own test files
EXTRA_KEYS = {"ImageNetSR": "LR_image", "Superres": "LR_image", "BBox": "coordinates_bbox", "ImageNet": "class_label"}


def _config_files() -> list[str]:
    files = []
    for root in (REPO_ROOT / "configs", REPO_ROOT / "models", REFERENCE_DIR / "original-configs"):
        files += sorted(glob.glob(str(root / "**" / "*.yaml"), recursive=True))
    return files


def _data_nodes() -> dict[str, tuple[str, dict]]:
    """One entry per distinct (target, params) under `data.params.<split>` of any config."""
    nodes: dict[str, tuple[str, dict]] = {}
    for path in _config_files():
        cfg = OmegaConf.to_container(OmegaConf.load(path))
        data = (cfg or {}).get("data") or {}
        for split, node in (data.get("params") or {}).items():
            if isinstance(node, dict) and "target" in node and not resolve_target(node["target"]).startswith(NOT_OURS):
                params = node.get("params") or {}
                nodes.setdefault(f"{node['target']}({params})", (node["target"], params))
    return nodes


NODES = _data_nodes()


@pytest.fixture(scope="module")
def data_tree(tmp_path_factory) -> Path:
    """A working directory with every public data set's layout under data/."""
    root = tmp_path_factory.mktemp("configs")
    make_faces(root, "celebahq", npy=True, size=(64, 64))
    make_faces(root, "ffhq", size=(64, 64))
    make_lsun(root, "churches", "church_outdoor")
    make_lsun(root, "bedrooms", "bedrooms")
    make_lsun(root, "cats", "cat")
    make_imagenet(root, per_class=1)
    make_openimages(root)
    make_coco(root)
    make_places(root)
    make_cocostuff(root)
    return root


FOLDER_LIKE = ("ImageFolder", "ImageCaptionFolder", "ClassFolder", "SemanticFolder", "SuperresFolder")


def _prepare(target: str, params: dict, root: Path) -> dict:
    """Point a node at data under `root`: your-own-data folders and lists, shards for WebDataset."""
    params = dict(params)
    name = target.rsplit(".", 1)[-1]
    if name == "WebDataset":
        params["shards"] = write_shards(root / "shards", 2, 2)
        params.pop("min_size", None)  # the test shards hold small images
    elif name in FOLDER_LIKE:
        folder = root / params.get("data_root", f"data/{name}")
        make_folder_for(target, folder)
        params["data_root"] = str(folder)
    elif name == "ImageCaptionList":
        make_folder_for("ImageFolder", root / "list_images")
        (root / "list.csv").write_text("path,caption\nlist_images/0.png,zero\n")
        params["list_file"] = str(root / "list.csv")
    if isinstance(params.get("dataset"), dict):
        inner = params["dataset"]
        params["dataset"] = {"target": inner["target"],
                             "params": _prepare(inner["target"], inner.get("params") or {}, root)}
    return params


def test_configs_name_data_targets():
    targets = {t for t, _ in NODES.values()}
    assert {"ldm.data.faceshq.CelebAHQTrain", "ldm.data.scenes.ScenesTrain", "ldm.data.folder.ImageCaptionFolder",
            "ldm.data.webdataset.WebDataset", "ldm.data.inpainting.InpaintingDataset"} <= targets
    if REFERENCE_DIR.is_dir():
        assert "ldm.data.openimages.SuperresOpenImagesAdvancedTrain" in targets
        assert "ldm.data.imagenet.ImageNetSRTrain" in targets and "taming.data.faceshq.FFHQTrain" in targets


@pytest.mark.parametrize("name", sorted(NODES))
def test_data_target_instantiates(name, data_tree, monkeypatch):
    target, params = NODES[name]
    monkeypatch.chdir(data_tree)
    if target in UNRELEASED:
        with pytest.raises(UnreleasedDatasetError) as err:
            instantiate_from_config({"target": target, "params": params})
        assert "never released" in str(err.value) and "\n" not in str(err.value)
        return
    ds = instantiate_from_config({"target": target, "params": _prepare(target, params, data_tree)})
    pickle.loads(pickle.dumps(ds))  # DataLoader workers may be spawned: the data set must pickle
    ex = next(iter(ds)) if isinstance(ds, IterableDataset) else ds[len(ds) - 1]
    key = next(k for k in ("image", "jpg") if k in ex)
    image = ex[key]
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.float32
    assert -1.0 <= image.min() and image.max() <= 1.0
    size = params.get("crop_size") or params.get("size") or (params.get("config") or {}).get("size")
    if size:
        assert image.shape[:2] == (size, size)
    for fragment, extra in EXTRA_KEYS.items():
        if fragment in target.rsplit(".", 1)[-1] and not params.get("keys"):
            assert extra in ex, (target, extra)


def test_unreleased_error_points_at_the_folder_loaders(monkeypatch):
    for target in sorted(UNRELEASED):
        with pytest.raises(UnreleasedDatasetError, match=r"never released.*ldm\.data\."):
            instantiate_from_config({"target": target, "params": {"size": 256}})
    assert os.path.isdir(REPO_ROOT / "ldm" / "data" / "previews")
