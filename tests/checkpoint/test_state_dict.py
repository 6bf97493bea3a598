"""load_state_dict_into: strictness, grouped reports, harmless extras, EMA, CLIP layout."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ldm.checkpoint import (
    CheckpointError,
    StateDictMismatchError,
    describe_keys,
    load_state_dict_into,
)
from ldm.modules.ema import LitEma


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.diffusion_model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))


class TinyLDM(nn.Module):
    """The key layout of a LatentDiffusion: model.diffusion_model.*, optional model_ema.*,
    a schedule buffer, and a CLIP-like cond stage."""

    def __init__(self, use_ema: bool = False, clip_v5_layout: bool = False):
        super().__init__()
        self.model = Wrapper()
        self.register_buffer("betas", torch.linspace(0, 1, 5))
        self.cond_stage_model = nn.Module()
        self.cond_stage_model.transformer = nn.Module()
        text = self.cond_stage_model.transformer if clip_v5_layout else nn.Module()
        if not clip_v5_layout:
            self.cond_stage_model.transformer.text_model = text
        text.final_layer_norm = nn.LayerNorm(4)
        if use_ema:
            self.model_ema = LitEma(self.model)


def released(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
            for k, v in model.state_dict().items()}


def test_strict_load_copies_every_tensor():
    model, sd = TinyLDM(), released(TinyLDM())
    report = load_state_dict_into(model, {"state_dict": sd})
    assert report.loaded == len(sd)
    for key, value in model.state_dict().items():
        assert torch.equal(value, sd[key]), key


def test_renamed_key_fails_loudly_naming_it():
    model, sd = TinyLDM(), released(TinyLDM())
    sd["model.diffusion_model.1.weights"] = sd.pop("model.diffusion_model.1.weight")
    with pytest.raises(StateDictMismatchError) as info:
        load_state_dict_into(model, sd, source="x.ckpt")
    msg = str(info.value)
    assert "\n" not in msg
    assert "model.diffusion_model.1" in msg and "weights" in msg and "missing" in msg and "unexpected" in msg
    assert info.value.missing == ["model.diffusion_model.1.weight"]
    assert info.value.unexpected == ["model.diffusion_model.1.weights"]


def test_shape_mismatch_is_reported():
    model, sd = TinyLDM(), released(TinyLDM())
    sd["model.diffusion_model.1.weight"] = torch.zeros(3, 4)
    with pytest.raises(StateDictMismatchError, match=r"wrong shape.*\[3, 4\] in file vs \[2, 4\]"):
        load_state_dict_into(model, sd)


def test_non_strict_and_ignore_keys():
    model, sd = TinyLDM(), released(TinyLDM())
    del sd["model.diffusion_model.1.bias"]
    sd["extra.thing"] = torch.zeros(1)
    report = load_state_dict_into(model, sd, strict=False)
    assert report.unexpected == ["extra.thing"] and "model.diffusion_model.1.bias" in report.missing
    model, sd = TinyLDM(), released(TinyLDM())
    sd["model.diffusion_model.1.weight"] = torch.zeros(7, 4)  # e.g. a new output head
    before = model.model.diffusion_model[1].weight.clone()
    load_state_dict_into(model, sd, ignore_keys=["model.diffusion_model.1."])
    assert torch.equal(model.model.diffusion_model[1].weight, before)


def test_different_model_gives_one_line_error():
    model = TinyLDM()
    other = {f"encoder.down.{i}.block.0.conv1.weight": torch.zeros(2) for i in range(5)}
    other.update({"quant_conv.weight": torch.zeros(8, 8, 1, 1), "encoder.conv_in.weight": torch.zeros(1),
                  "decoder.conv_out.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="different model") as info:
        load_state_dict_into(model, other, source="kl-f8.ckpt")
    assert "\n" not in str(info.value) and "kl-f8" in str(info.value)


def test_harmless_extras_are_dropped_silently(caplog):
    model, sd = TinyLDM(), released(TinyLDM())
    sd.update({"loss.logvar": torch.zeros(()), "first_stage_model.loss.discriminator.w": torch.zeros(2),
               "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None],
               "model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(5, dtype=torch.int32)})
    report = load_state_dict_into(model, sd)
    assert len(report.dropped_extras) == 5 and not report.unexpected
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize("file_v5, model_v5", [(False, True), (True, False), (True, True)])
def test_clip_key_layouts_load_both_ways(file_v5, model_v5):
    src = TinyLDM(clip_v5_layout=file_v5)
    sd = released(src)
    model = TinyLDM(clip_v5_layout=model_v5)
    load_state_dict_into(model, sd)
    text = model.cond_stage_model.transformer if model_v5 else model.cond_stage_model.transformer.text_model
    key = "cond_stage_model.transformer." + ("" if file_v5 else "text_model.") + "final_layer_norm.weight"
    assert torch.equal(text.final_layer_norm.weight, sd[key])


def test_use_ema_copies_the_full_ema_layout_into_the_weights():
    src = TinyLDM(use_ema=True)
    sd = released(src)
    shadow = "model_ema.diffusion_model0weight"  # `model.diffusion_model.0.weight` without dots
    assert shadow in sd
    model = TinyLDM()                           # inference model: no EMA module
    load_state_dict_into(model, sd, use_ema=True)
    assert torch.equal(model.model.diffusion_model[0].weight, sd[shadow])
    model = TinyLDM()
    load_state_dict_into(model, sd)              # EMA present but not asked: raw weights, no error
    assert torch.equal(model.model.diffusion_model[0].weight, sd["model.diffusion_model.0.weight"])
    with pytest.raises(CheckpointError, match="no EMA"):
        load_state_dict_into(TinyLDM(), released(TinyLDM()), use_ema=True)


def test_model_with_ema_starts_it_from_weights_of_a_pruned_file():
    sd = released(TinyLDM())                     # pruned: no model_ema.*
    model = TinyLDM(use_ema=True)
    report = load_state_dict_into(model, sd)
    assert report.ema_initialised == 4
    assert torch.equal(model.model_ema.diffusion_model0weight, sd["model.diffusion_model.0.weight"])


def test_prefix_loads_a_submodule_from_a_full_file():
    sd = released(TinyLDM())
    wrapper = Wrapper()
    load_state_dict_into(wrapper, sd, prefix="model.")
    assert torch.equal(wrapper.diffusion_model[1].bias, sd["model.diffusion_model.1.bias"])


def test_meta_model_takes_the_tensors():
    sd = released(TinyLDM())
    with torch.device("meta"):
        model = TinyLDM()
    load_state_dict_into(model, sd)
    assert not model.model.diffusion_model[0].weight.is_meta
    assert torch.equal(model.model.diffusion_model[0].weight, sd["model.diffusion_model.0.weight"])


def test_describe_keys_groups_by_prefix():
    keys = [f"model.diffusion_model.input_blocks.{i}.weight" for i in range(5)] + ["betas"]
    text = describe_keys(keys)
    assert text.startswith("6 keys:") and "+2 more" in text and "betas" in text
