"""The diffusers layout: key tables are a bijection on the SD v1 keys; folder round trip."""
from __future__ import annotations

import json

import pytest
import torch

from ldm.checkpoint import diffusers_keymap as km
from ldm.checkpoint.diffusers_io import export_diffusers, import_diffusers


def test_key_tables_are_a_bijection_on_sd_v1(load_manifest):
    keys = list(load_manifest("sd_v1-inference")["state_dict"])
    parts, rest = km.split_for_diffusers(keys)
    assert sorted(rest) == sorted(k for k in keys if "." not in k)  # only the schedule buffers
    assert {name: len(m) for name, m in parts.items()} == {"unet": 686, "vae": 248, "text_encoder": 196}
    for name, mapping in parts.items():
        assert len(set(mapping.values())) == len(mapping), name
        for ours, theirs in mapping.items():
            assert km.from_diffusers_key(name, theirs) == ours
    unet = parts["unet"]
    assert unet["model.diffusion_model.input_blocks.1.0.in_layers.0.weight"] == "down_blocks.0.resnets.0.norm1.weight"
    assert unet["model.diffusion_model.output_blocks.2.1.conv.weight"] == "up_blocks.0.upsamplers.0.conv.weight"
    assert parts["vae"]["first_stage_model.decoder.up.3.block.0.conv1.weight"] == "decoder.up_blocks.0.resnets.0.conv1.weight"


def tiny_sd_state_dict(manifest: dict) -> dict[str, torch.Tensor]:
    """The SD v1 keys with small random tensors (4-D attention convs stay 4-D)."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for key, shape in manifest["state_dict"].items():
        small = [min(s, 3) for s in shape]
        if key.endswith("input_blocks.0.0.weight"):
            small = shape
        sd[key] = torch.randn(small, generator=g)
    return sd


def test_folder_round_trip_gives_identical_tensors(tmp_path, load_manifest):
    sd = tiny_sd_state_dict(load_manifest("sd_v1-inference"))
    sd["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = torch.zeros(49408, 768)
    extras = export_diffusers(sd, str(tmp_path / "sd"))
    assert len(extras) == 12
    for sub in ("unet", "vae", "text_encoder", "scheduler"):
        assert (tmp_path / "sd" / sub).is_dir()
    unet_cfg = json.loads((tmp_path / "sd" / "unet" / "config.json").read_text())
    assert unet_cfg["down_block_types"][-1] == "DownBlock2D" and unet_cfg["in_channels"] == 4
    back = import_diffusers(str(tmp_path / "sd"))["state_dict"]
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert torch.equal(back[key], value), key


def test_import_without_extras_recomputes_the_schedule(tmp_path, load_manifest, load_golden):
    sd = tiny_sd_state_dict(load_manifest("sd_v1-inference"))
    sd["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = torch.zeros(49408, 768)
    golden = load_golden("ddpm_schedule")["state_dict"]  # the SD v1 schedule as the original computes it
    sd.update(golden)
    export_diffusers(sd, str(tmp_path / "sd"))
    (tmp_path / "sd" / "ldm_extras.safetensors").unlink()
    back = import_diffusers(str(tmp_path / "sd"))["state_dict"]
    for key, value in golden.items():
        assert torch.equal(back[key], value), key


def test_matches_diffusers_models_when_installed(load_manifest):
    diffusers = pytest.importorskip("diffusers")
    parts, _ = km.split_for_diffusers(load_manifest("sd_v1-inference")["state_dict"])
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(
            sample_size=64, cross_attention_dim=768, attention_head_dim=8,
            block_out_channels=(320, 640, 1280, 1280))
        vae = diffusers.AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4)
    assert set(unet.state_dict()) == set(parts["unet"].values())
    assert set(vae.state_dict()) == set(parts["vae"].values())
