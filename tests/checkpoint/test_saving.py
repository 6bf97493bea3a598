"""save_checkpoint: atomic writes; ckpt -> safetensors -> ckpt round trips; conversion script."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from ldm.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import REPO_ROOT


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sample_checkpoint() -> dict:
    g = torch.Generator().manual_seed(0)
    first = torch.randn(4, 3, 3, 3, generator=g)
    return {
        "global_step": 1234, "epoch": 2,
        "state_dict": {
            "model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3, generator=g),
            "model_ema.diffusion_modelinput_blocks00weight": torch.randn(8, 4, 3, 3, generator=g),
            "model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(7, dtype=torch.int32),
            "first_stage_model.encoder.conv_in.weight": first,
            "cond_stage_model.encoder.conv_in.weight": first,            # aliased, as in inpainting_big
            "cond_stage_model.transformer.final_layer_norm.weight": torch.ones(4),  # transformers-5 spelling
            "betas": torch.linspace(1e-4, 2e-2, 10),
        },
    }


def test_round_trip_ckpt_safetensors_ckpt(tmp_path):
    ckpt = sample_checkpoint()
    config = {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": {"timesteps": 10}}}
    save_checkpoint(ckpt, tmp_path / "a.ckpt")
    save_checkpoint(load_checkpoint(tmp_path / "a.ckpt"), tmp_path / "b.safetensors", config=config)
    middle = load_checkpoint(tmp_path / "b.safetensors")
    assert middle["config"] == config and middle["global_step"] == 1234 and middle["epoch"] == 2
    save_checkpoint(middle, tmp_path / "c.ckpt")
    back = load_checkpoint(tmp_path / "c.ckpt")
    assert back["config"] == config
    expected = dict(ckpt["state_dict"])
    expected["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = expected.pop(
        "cond_stage_model.transformer.final_layer_norm.weight")  # saved in the released layout
    assert set(back["state_dict"]) == set(expected)
    for key, value in expected.items():
        assert back["state_dict"][key].dtype == value.dtype and torch.equal(back["state_dict"][key], value), key


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "model.ckpt"
    save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["model.ckpt"]


def test_convert_script_prunes_to_ema_and_casts(tmp_path):
    convert = load_script("convert_checkpoint")
    save_checkpoint(sample_checkpoint(), tmp_path / "full.ckpt")
    assert convert.main([str(tmp_path / "full.ckpt"), str(tmp_path / "ema.safetensors"), "--ema-only", "--dtype", "fp16"]) == 0
    out = load_checkpoint(tmp_path / "ema.safetensors")["state_dict"]
    src = sample_checkpoint()["state_dict"]
    assert not any(k.startswith("model_ema.") for k in out)
    w = out["model.diffusion_model.input_blocks.0.0.weight"]
    assert w.dtype == torch.float16 and torch.equal(w, src["model_ema.diffusion_modelinput_blocks00weight"].half())
    assert out["betas"].dtype == torch.float32
    assert convert.main([str(tmp_path / "ema.safetensors"), str(tmp_path / "back.ckpt"), "--dtype", "bf16"]) == 0
    assert load_checkpoint(tmp_path / "back.ckpt")["state_dict"]["first_stage_model.encoder.conv_in.weight"].dtype == torch.bfloat16


def test_convert_script_refuses_unsafe_input(tmp_path, capsys):
    from tests.checkpoint.helpers import write_malicious

    convert = load_script("convert_checkpoint")
    marker = tmp_path / "PWNED"
    path = write_malicious(str(tmp_path / "evil.ckpt"), str(marker))
    assert convert.main([path, str(tmp_path / "out.safetensors")]) == 1
    assert "refusing" in capsys.readouterr().err and not marker.exists()


def test_inspect_script(tmp_path, capsys, load_manifest):
    from tests.checkpoint.helpers import released_state_dict, write_released

    inspect = load_script("inspect_checkpoint")
    manifest = load_manifest("ldm_cin256")
    path = write_released(str(tmp_path / "cin.ckpt"), released_state_dict(manifest))
    assert inspect.main([path]) == 0
    out = capsys.readouterr().out
    for text in ("torch-zip", "470000", "class-conditional ImageNet", "EMA weights: yes", "models/ldm/cin256/config.yaml",
                 "model.diffusion_model"):
        assert text in out, text
    info = inspect.inspect(path)
    assert info["family"] == "ldm/cin256" and info["groups"]["model_ema"]["tensors"] > 600
