"""LatentDiffusion's first-stage API (golden `ldm_first_stage`), scale_by_std, patch-wise coding."""
from __future__ import annotations

import copy
import types

import pytest
import torch

from ldm.models.diffusion import first_stage as patches
from ldm.models.diffusion.ddpm import DDPM, LatentDiffusion
from ldm.util import instantiate_from_config
from tests.models.tiny import make_ldm, unconditional_kl_params


@pytest.fixture(scope="module")
def golden(load_golden):
    return load_golden("ldm_first_stage")


def build(golden, variant):
    params = copy.deepcopy(golden["config"])
    params.update(golden["config_variants"][variant] or {})
    model = instantiate_from_config({"target": golden["target"], "params": params})
    missing, unexpected = model.load_state_dict(golden["state_dict"], strict=False)
    assert list(missing) == golden["outputs"][variant]["missing_keys_when_loading_state_dict"]
    assert not unexpected
    return model


def attach_stand_in_trainer(model, **values):
    """What the fixture did: a stand-in trainer with current_epoch 0 and global_step 0."""
    model.trainer = types.SimpleNamespace(**{"current_epoch": 0, "global_step": 0, **values})


@pytest.mark.parametrize("variant", ["fixed_scale_factor", "scale_by_std"])
def test_first_stage_api_matches_the_original(golden, variant, assert_matches_reference):
    model = build(golden, variant)
    out = golden["outputs"][variant]
    batch, seeds = golden["inputs"]["batch"], golden["inputs"]["rng_seeds"]
    with torch.no_grad():
        if variant == "scale_by_std":
            assert torch.equal(model.scale_factor, out["scale_factor_before"])
            attach_stand_in_trainer(model)
            model.train()
            torch.manual_seed(seeds["on_train_batch_start"])
            model.on_train_batch_start(batch, 0)  # the Lightning 2 signature
            hook = out["on_train_batch_start"]
            assert model.scale_factor.dtype == torch.float32 and model.scale_factor.ndim == 0
            assert torch.equal(model.scale_factor, hook["scale_factor_after"])
            torch.testing.assert_close(model.scale_factor, 1.0 / hook["z"].flatten().std())
            model.on_train_batch_start(batch, 1)
            assert torch.equal(model.scale_factor, hook["scale_factor_after_second_call_batch_idx_1"])
            model.eval()
            model.trainer = None
            assert torch.equal(model.state_dict()["scale_factor"], out["scale_factor_in_state_dict"])
        else:
            assert model.scale_factor == out["scale_factor_used"] and "scale_factor" not in model.state_dict()

        x = DDPM.get_input(model, batch, "image")
        assert x.shape == (2, 3, 32, 32) and x.is_contiguous()
        posterior = model.encode_first_stage(x)
        assert_matches_reference(posterior.mean, out["posterior_mean"], name="posterior_mean")
        assert_matches_reference(posterior.logvar, out["posterior_logvar"], name="posterior_logvar")
        z_mode = model.get_first_stage_encoding(posterior.mode())
        assert_matches_reference(z_mode, out["z_mode"], name="z_mode")
        torch.manual_seed(seeds["get_first_stage_encoding"])
        assert_matches_reference(model.get_first_stage_encoding(posterior), out["z_sample"], name="z_sample")
        assert_matches_reference(model.decode_first_stage(z_mode), out["decode_first_stage_z_mode"], name="dec")
        assert_matches_reference(model.decode_first_stage(golden["inputs"]["z_random"]),
                                 out["decode_first_stage_z_random"], name="decode z_random")
        torch.manual_seed(seeds["get_input"])
        z, c = model.get_input(batch, "image")
        assert c is None
        assert_matches_reference(z, out["get_input"]["z"], name="get_input z")
        torch.manual_seed(seeds["get_input"])
        z, c, x_out, xrec = model.get_input(batch, "image", return_first_stage_outputs=True)
        ref = out["get_input_return_first_stage_outputs"]
        assert_matches_reference(z, ref["z"], name="z")
        assert torch.equal(x_out, ref["x"])
        assert_matches_reference(xrec, ref["xrec"], name="xrec")
        assert_matches_reference(model.apply_model(z_mode, golden["inputs"]["t"], None),
                                 out["apply_model_z_mode"], name="apply_model")


def test_scale_by_std_only_on_the_first_batch_of_a_fresh_run(golden):
    batch = golden["inputs"]["batch"]
    for trainer_values, batch_idx in [({"global_step": 5}, 0), ({"current_epoch": 1}, 0), ({}, 3)]:
        model = build(golden, "scale_by_std")
        attach_stand_in_trainer(model, **trainer_values)
        model.on_train_batch_start(batch, batch_idx)
        assert model.scale_factor.item() == 1.0
    model = build(golden, "scale_by_std")
    model.restarted_from_ckpt = True
    attach_stand_in_trainer(model)
    model.on_train_batch_start(batch, 0)
    assert model.scale_factor.item() == 1.0

    bad = instantiate_from_config({"target": golden["target"], "params": {
        **golden["config"], "scale_by_std": True, "scale_factor": 0.5}})
    attach_stand_in_trainer(bad)
    with pytest.raises(ValueError, match="scale_factor 1.0"):
        bad.on_train_batch_start(batch, 0)


def test_scale_factor_survives_save_and_load(tmp_path, golden):
    model = build(golden, "scale_by_std")
    attach_stand_in_trainer(model)
    torch.manual_seed(0)
    model.on_train_batch_start(golden["inputs"]["batch"], 0)
    estimated = model.scale_factor.clone()
    assert estimated.item() != 1.0
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict()}, path)

    params = {**copy.deepcopy(golden["config"]), "scale_by_std": True, "scale_factor": 1.0}
    restored = instantiate_from_config({"target": golden["target"], "params": {**params, "ckpt_path": str(path)}})
    assert restored.restarted_from_ckpt and torch.equal(restored.scale_factor, estimated)
    attach_stand_in_trainer(restored)
    restored.on_train_batch_start(golden["inputs"]["batch"], 0)  # a restored model keeps its factor
    assert torch.equal(restored.scale_factor, estimated)

    fresh = instantiate_from_config({"target": golden["target"], "params": params})
    fresh.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    fresh.on_load_checkpoint({})  # what Lightning calls when it resumes a run
    attach_stand_in_trainer(fresh)
    fresh.on_train_batch_start(golden["inputs"]["batch"], 0)
    assert torch.equal(fresh.scale_factor, estimated)


def test_ckpt_path_errors_are_one_line(tmp_path):
    from ldm.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="no such checkpoint file") as err:
        make_ldm(ckpt_path=str(tmp_path / "missing.ckpt"))
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a checkpoint") as err:
        make_ldm(ckpt_path=str(bad))
    assert "\n" not in str(err.value)


def test_ckpt_path_loads_safetensors_and_ignore_keys(tmp_path, caplog):
    from safetensors.torch import save_file

    source = make_ldm()
    with torch.no_grad():
        for p in source.model.parameters():
            p.add_(1.0)
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = make_ldm(ckpt_path=str(path))
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    partial = make_ldm(ckpt_path=str(path), ignore_keys=["model.diffusion_model.out."])
    assert not torch.equal(partial.model.diffusion_model.out[2].weight, source.model.diffusion_model.out[2].weight)
    kept = {k: v for k, v in source.state_dict().items() if not k.startswith("model.diffusion_model.out.")}
    assert all(torch.equal(partial.state_dict()[k], v) for k, v in kept.items())
    renamed = {("model.diffusion_model.renamed" if k == "model.diffusion_model.out.2.weight" else k): v
               for k, v in source.state_dict().items()}
    save_file({k: v.contiguous() for k, v in renamed.items()}, str(tmp_path / "renamed.safetensors"))
    with pytest.raises(Exception, match="model.diffusion_model"):  # strict: the renamed key is named
        make_ldm(ckpt_path=str(tmp_path / "renamed.safetensors"))


def test_first_stage_is_frozen():
    model = instantiate_from_config({"target": "ldm.models.diffusion.ddpm.LatentDiffusion",
                                     "params": unconditional_kl_params()})
    assert isinstance(model, LatentDiffusion) and model.cond_stage_model is None
    assert model.model.conditioning_key is None
    assert not any(p.requires_grad for p in model.first_stage_model.parameters())
    model.train()
    assert not model.first_stage_model.training
    params = {id(p) for p in model.trainable_parameters()}
    assert params == {id(p) for p in model.model.parameters()}


def test_patchwise_equals_whole_for_local_functions():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 24, 32)
    params = {"ks": (8, 8), "stride": (4, 4)}
    out = patches.patchwise(lambda crop, i: 2.0 * crop, x, params)
    torch.testing.assert_close(out, 2.0 * x)
    up = patches.patchwise(lambda crop, i: crop.repeat_interleave(2, 2).repeat_interleave(2, 3), x, params, scale=2)
    torch.testing.assert_close(up, x.repeat_interleave(2, 2).repeat_interleave(2, 3))
    down = patches.patchwise(lambda crop, i: torch.nn.functional.avg_pool2d(crop, 2), x, params, scale=0.5)
    torch.testing.assert_close(down, torch.nn.functional.avg_pool2d(x, 2))
    crops = patches.crops_of(x, params)
    assert len(crops) == ((24 - 8) // 4 + 1) * ((32 - 8) // 4 + 1) and crops[1].shape == (2, 3, 8, 8)
    torch.testing.assert_close(crops[1], x[:, :, 0:8, 4:12])


def test_patchwise_first_stage_and_denoising_in_the_model():
    model = make_ldm(conditioning_key="concat", unet_config={
        "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
        "params": {"image_size": 8, "in_channels": 8, "out_channels": 4, "model_channels": 32,
                   "attention_resolutions": [], "num_res_blocks": 1, "channel_mult": [1], "num_heads": 1}})
    z = torch.randn(1, 4, 16, 16)
    c = torch.randn(1, 4, 16, 16)
    t = torch.tensor([10])
    whole = model.apply_model(z, t, c)
    model.split_input_params = {"ks": (16, 16), "stride": (8, 8), "vqf": 1, "patch_distributed_vq": True}
    torch.testing.assert_close(model.apply_model(z, t, c), whole)  # one crop: identical
    model.split_input_params["ks"] = (8, 8)
    tiled = model.apply_model(z, t, c)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()
    torch.testing.assert_close(model.decode_first_stage(z), z)  # identity first stage, blended crops
    torch.testing.assert_close(model.encode_first_stage(z), z)
