"""Every way a checkpoint enters the project refuses a pickle that runs code (the marker file
it would create never appears), and the fine-tuning configs fit their base configs."""
from __future__ import annotations

import importlib
import os

import pytest
from omegaconf import OmegaConf

from ldm.checkpoint import CheckpointError
from tests.checkpoint.helpers import write_malicious
from tests.conftest import REPO_ROOT


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "PWNED"
    path = write_malicious(str(tmp_path / "evil.ckpt"), str(marker))
    yield path
    assert not marker.exists(), "the pickle ran code"


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as err:
        pytest.skip(f"{name} not importable yet: {err}")


def test_main_finetune_from_refuses(evil, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    main = _import("main")
    with pytest.raises(CheckpointError, match="refusing"):
        main.finetune_from(object(), evil, unsafe_pickle=False, use_ema=False, ignore_keys=())


def test_main_resume_check_refuses(evil, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    main = _import("main")
    with pytest.raises((CheckpointError, SystemExit)):
        main.check_resume_checkpoint(evil, unsafe_pickle=False)


def test_sampling_scripts_loader_refuses(evil):
    sampling = _import("ldm.sampling_utils")
    config = OmegaConf.create({"model": {"target": "torch.nn.Identity"}})
    with pytest.raises(CheckpointError, match="refusing"):
        sampling.load_model(config, evil)


def test_ckpt_path_of_a_first_stage_refuses(evil):
    autoencoder = _import("ldm.models.autoencoder")
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 32, "in_channels": 3, "out_ch": 3, "ch": 32,
                "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    with pytest.raises(CheckpointError, match="refusing"):
        autoencoder.AutoencoderKL(ddconfig=ddconfig, lossconfig={"target": "torch.nn.Identity"}, embed_dim=4,
                                  ckpt_path=evil)


FINETUNE = {
    "sd-v1-lora.yaml": "configs/stable-diffusion/v1-inference.yaml",
    "sd-v1-full.yaml": "configs/stable-diffusion/v1-inference.yaml",
    "sd-v1-full-cached.yaml": "configs/stable-diffusion/v1-inference.yaml",
    "ldm-celeba256.yaml": "models/ldm/celeba256/config.yaml",
    "first-stage-kl-f8.yaml": "models/first_stage_models/kl-f8/config.yaml",
}


@pytest.mark.parametrize("name", sorted(FINETUNE))
def test_finetune_config_builds_its_data_and_callbacks(name, tmp_path):
    from PIL import Image

    from ldm.util import get_obj_from_str, instantiate_from_config

    base = REPO_ROOT / FINETUNE[name]
    if not base.is_file():
        pytest.skip(f"{FINETUNE[name]} is not in this checkout yet")
    config = OmegaConf.merge(OmegaConf.load(base), OmegaConf.load(REPO_ROOT / "configs" / "finetune" / name))
    get_obj_from_str(config.model.target)
    train = config.data.params.train
    if train.target.endswith("CachedLatents"):
        get_obj_from_str(train.target)
    else:
        for i in range(2):
            Image.new("RGB", (40, 32), (i * 90, 10, 200)).save(tmp_path / f"img{i}.png")
            (tmp_path / f"img{i}.txt").write_text(f"caption {i}")
        train.params.data_root = str(tmp_path)
        train.params.size = 16
        train.params.pop("crop_size", None)
        sample = instantiate_from_config(train)[0]
        key = config.model.params.get("first_stage_key", config.model.params.get("image_key", "image"))
        assert sample[key].shape == (16, 16, 3)
        if "cond_stage_key" in config.model.params and config.model.params.cond_stage_key == "txt":
            assert sample["txt"].startswith("caption")
    for cb in (config.get("lightning", {}).get("callbacks") or {}).values():
        instantiate_from_config(cb)
    assert os.path.basename(base)
