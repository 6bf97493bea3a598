"""Every released layout (the reference manifests) loads strictly from a file written in it.

Part 1 needs no model code: a module with exactly the manifest's keys on the meta device
stands in for the model, so the file format, the released extras (`loss.*` of first stages,
CLIP `position_ids`, EMA counters) and the key matching are checked for all 22 layouts.
Part 2 builds our model from our config on the meta device and loads the same file.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

from ldm.checkpoint import (
    CheckpointError,
    detect_family,
    load_checkpoint,
    load_state_dict_into,
)
from tests.checkpoint.helpers import (
    ManifestModule,
    expected_family,
    our_config,
    released_state_dict,
    write_released,
)
from tests.conftest import REFERENCE_DIR, REPO_ROOT

MANIFESTS = sorted(p[:-5] for p in os.listdir(REFERENCE_DIR / "manifests")
                   if p.endswith(".json") and not p.startswith("clip_")) if (REFERENCE_DIR / "manifests").is_dir() else []
LARGE = {"sd_v1-inference", "ldm_txt2img-1p4B-eval"}


@pytest.fixture(scope="module")
def released_files(tmp_path_factory, reference_dir):
    folder = tmp_path_factory.mktemp("released")
    cache: dict[str, tuple[str, dict]] = {}

    def get(name: str) -> tuple[str, dict]:
        if name not in cache:
            manifest = json.loads((reference_dir / "manifests" / f"{name}.json").read_text())
            path = write_released(str(folder / f"{name}.ckpt"), released_state_dict(manifest))
            cache[name] = (path, manifest)
        return cache[name]

    return get


@pytest.mark.parametrize("name", MANIFESTS)
def test_released_layout_loads_strictly(name, released_files):
    path, manifest = released_files(name)
    ckpt = load_checkpoint(path)
    assert ckpt["global_step"] == 470000
    model = ManifestModule(manifest["state_dict"])
    report = load_state_dict_into(model, ckpt["state_dict"], source=path)
    assert report.loaded == len(manifest["state_dict"]) and not report.missing
    state = model.state_dict()
    for i, key in enumerate(manifest["state_dict"]):
        assert float(state[key].reshape(-1)[0]) == float(i), key  # every tensor landed at its own key


@pytest.mark.parametrize("name", MANIFESTS)
def test_family_and_config_are_detected(name, released_files):
    _, manifest = released_files(name)
    family = detect_family(manifest["state_dict"])
    assert family is not None and family.name == expected_family(name)
    assert our_config(name) in family.configs


@pytest.mark.parametrize("name", ["first_stage_kl-f8", "ldm_cin256", "sd_v1-inference"])
def test_renamed_key_fails_naming_it(name, released_files):
    path, manifest = released_files(name)
    sd = load_checkpoint(path)["state_dict"]
    key = next(k for k in manifest["state_dict"] if k.endswith(("conv_in.weight", "input_blocks.0.0.weight")))
    sd[key.replace("weight", "kernel")] = sd.pop(key)
    with pytest.raises(CheckpointError) as info:
        load_state_dict_into(ManifestModule(manifest["state_dict"]), sd, source=path)
    assert key.rsplit(".", 2)[-2] in str(info.value) and "kernel" in str(info.value)


def test_checkpoint_for_another_model_is_refused(released_files):
    path, _ = released_files("first_stage_kl-f8")
    _, cin = released_files("ldm_cin256")
    with pytest.raises(CheckpointError, match="different model.*first stage KL \\(kl-f8\\)"):
        load_state_dict_into(ManifestModule(cin["state_dict"]), load_checkpoint(path)["state_dict"], source=path)


# ---- part 2: our models, built from our configs ------------------------------------------------

def _local_clip_folder(folder) -> str:
    """A CLIP text config (the manifests' ViT-L/14 one) and a 3-word tokenizer, no weights."""
    import json

    config = json.loads((REFERENCE_DIR / "manifests" / "clip_text_keys_by_transformers_version.json").read_text())["config"]
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(dict(config, model_type="clip_text_model")))
    (folder / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return str(folder)


def _offline_overrides(config, tmp_path) -> None:
    """What the manifests changed to build offline: training losses -> Identity, no BERT
    tokenizer download, a local CLIP config, no first-stage weights file (the test loads a
    whole file instead)."""
    params = config.model.get("params") or {}
    if "lossconfig" in params:
        params.lossconfig = {"target": "torch.nn.Identity"}
    for stage in ("first_stage_config", "cond_stage_config"):
        node = params.get(stage)
        if not hasattr(node, "get") or not node.get("params"):
            continue
        if "lossconfig" in node.params:
            node.params.lossconfig = {"target": "torch.nn.Identity"}
        if "ckpt_path" in node.params:
            node.params.ckpt_path = None
        if str(node.get("target", "")).endswith("BERTEmbedder"):
            node.params.use_tokenizer = False
    cond = params.get("cond_stage_config")
    if hasattr(cond, "get") and str(cond.get("target", "")).endswith("FrozenCLIPEmbedder"):
        cond.params = dict(cond.get("params") or {}, version=_local_clip_folder(tmp_path / "clip"))


def _build_on_meta(config_path: str, tmp_path):
    from omegaconf import OmegaConf

    from ldm.util import instantiate_from_config

    config = OmegaConf.load(config_path)
    _offline_overrides(config, tmp_path)
    with torch.device("meta"):
        return instantiate_from_config(config.model)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in LARGE else n for n in MANIFESTS])
def test_our_model_loads_the_released_layout(name, released_files, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    config_path = REPO_ROOT / our_config(name)
    if not config_path.is_file():
        pytest.skip(f"{our_config(name)} is not in this checkout yet")
    try:
        model = _build_on_meta(str(config_path), tmp_path)
    except (ImportError, OSError) as err:  # model code or offline assets not available
        pytest.skip(f"cannot build {name} offline: {str(err).splitlines()[0]}")
    path, manifest = released_files(name)
    load_state_dict_into(model, load_checkpoint(path)["state_dict"], source=path)
    assert set(model.state_dict()) == set(manifest["state_dict"])
