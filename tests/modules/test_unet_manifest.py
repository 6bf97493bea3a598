"""Every UNet of the released configs has the released key layout (names, shapes, order).

Each YAML under `original-configs/` with a `model.params.unet_config` is instantiated through
`instantiate_from_config` on the meta device (no memory, no init time) and compared with the
`model.diffusion_model.*` part of its manifest. Configs without a manifest of their own are
compared with the manifest of a config whose UNet differs only in `image_size` (which does not
change the layout); the one with no such twin (retrieval-augmented 768x768) must build.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ldm.modules.attention import SpatialTransformer
from ldm.modules.diffusionmodules.openaimodel import AttentionBlock
from ldm.util import instantiate_from_config

PREFIX = "model.diffusion_model."
# collected at import time for parametrization; the same default as tests/conftest.py
REFERENCE = Path(os.environ.get("LDM_REFERENCE_DIR", Path(__file__).resolve().parents[3] / "shared" / "reference"))
CONFIGS = sorted(p.relative_to(REFERENCE / "original-configs").as_posix()
                 for p in (REFERENCE / "original-configs").rglob("*.yaml")
                 if "unet_config" in p.read_text())


def unet_params(config_path: Path) -> dict:
    params = OmegaConf.to_container(OmegaConf.load(config_path).model.params.unet_config.params)
    params.pop("image_size", None)
    return params


@pytest.fixture(scope="module")
def manifests_by_config(reference_dir: Path) -> dict[str, dict]:
    found = {}
    for path in sorted((reference_dir / "manifests").glob("*.json")):
        manifest = json.loads(path.read_text())
        if manifest.get("config_path") and any(k.startswith(PREFIX) for k in manifest["state_dict"]):
            found[manifest["config_path"]] = manifest
    return found


def matching_manifest(config: str, manifests: dict[str, dict], reference_dir: Path) -> dict | None:
    if config in manifests:
        return manifests[config]
    params = unet_params(reference_dir / "original-configs" / config)
    for other, manifest in manifests.items():
        if unet_params(reference_dir / "original-configs" / other) == params:
            return manifest
    return None


def attention_layout(model: torch.nn.Module) -> list[tuple[str, str, int, int]]:
    layout = []
    for name, m in model.named_modules():
        if isinstance(m, SpatialTransformer):
            attn = m.transformer_blocks[0].attn1
            layout.append((PREFIX + name, "SpatialTransformer", attn.heads, attn.to_q.out_features // attn.heads))
        elif isinstance(m, AttentionBlock):
            layout.append((PREFIX + name, "AttentionBlock", m.num_heads, m.channels // m.num_heads))
    return layout


def test_every_released_unet_config_is_covered(reference_dir):
    assert len(CONFIGS) >= 20, CONFIGS


@pytest.mark.parametrize("config", CONFIGS)
def test_unet_keys_and_shapes_equal_the_manifest(config, reference_dir, manifests_by_config):
    node = OmegaConf.load(reference_dir / "original-configs" / config).model.params.unet_config
    with torch.device("meta"):
        model = instantiate_from_config(node)
    state = {PREFIX + k: list(v.shape) for k, v in model.state_dict().items()}
    manifest = matching_manifest(config, manifests_by_config, reference_dir)
    if manifest is None:
        assert "retrieval-augmented" in config, f"no manifest for {config}"
        assert sum(p.numel() for p in model.parameters()) > 0
        return
    expected = {k: v for k, v in manifest["state_dict"].items() if k.startswith(PREFIX)}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    assert not missing and not unexpected, f"missing {missing[:5]}, unexpected {unexpected[:5]}"
    assert state == expected
    assert list(state) == list(expected), "state-dict order differs from the release"
    ref_layout = [(a["module"], a["class"], a["heads"], a["dim_head"]) for a in manifest["attention_layout"]]
    assert attention_layout(model) == ref_layout
