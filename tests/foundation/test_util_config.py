"""ldm.util: instantiate_from_config, the alias table and the config error messages."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ldm.util import ConfigError, get_obj_from_str, instantiate_from_config, resolve_target


def test_builds_target_with_params():
    layer = instantiate_from_config({"target": "torch.nn.Linear", "params": {"in_features": 3, "out_features": 2}})
    assert isinstance(layer, torch.nn.Linear) and layer.weight.shape == (2, 3)


def test_special_markers_return_none():
    assert instantiate_from_config("__is_first_stage__") is None
    assert instantiate_from_config("__is_unconditional__") is None


def test_aliases_cover_taming_lightning_and_main():
    assert resolve_target("pytorch_lightning.callbacks.LearningRateMonitor") == "lightning.pytorch.callbacks.LearningRateMonitor"
    assert get_obj_from_str("pytorch_lightning.callbacks.LearningRateMonitor").__module__.startswith("lightning.pytorch")
    assert get_obj_from_str("main.DataModuleFromConfig").__name__ == "DataModuleFromConfig"
    assert get_obj_from_str("main.ImageLogger").__name__ == "ImageLogger"
    assert resolve_target("taming.modules.vqvae.quantize.VectorQuantizer2") == "ldm.modules.vqvae.quantize.VectorQuantizer2"


def test_unknown_target_names_config_path():
    cfg = OmegaConf.create({"model": {"params": {"unet_config": {"target": "ldm.modules.foo.Bar"}}}})
    with pytest.raises(ConfigError) as err:
        instantiate_from_config(cfg.model.params.unet_config)
    message = str(err.value)
    assert message.startswith("model.params.unet_config.target: cannot import 'ldm.modules.foo.Bar'")
    assert "\n" not in message


def test_unknown_attribute_in_existing_module():
    with pytest.raises(ConfigError, match=r"cannot import 'torch.nn.NoSuchLayer'"):
        instantiate_from_config({"target": "torch.nn.NoSuchLayer"}, path="model")


def test_unexpected_argument_lists_accepted_ones():
    cfg = OmegaConf.create({"model": {"target": "torch.nn.Linear",
                                      "params": {"in_features": 3, "out_features": 2, "bais": False}}})
    with pytest.raises(ConfigError) as err:
        instantiate_from_config(cfg.model)
    message = str(err.value)
    assert message.startswith("model.params: Linear does not take 'bais'")
    assert "accepted: in_features, out_features, bias, device, dtype" in message


def test_missing_required_argument():
    with pytest.raises(ConfigError, match=r"data.params: Linear needs 'out_features'"):
        instantiate_from_config({"target": "torch.nn.Linear", "params": {"in_features": 3}}, path="data")


def test_missing_target():
    cfg = OmegaConf.create({"model": {"params": {"first_stage_config": {"params": {"embed_dim": 4}}}}})
    with pytest.raises(ConfigError, match=r"^model.params.first_stage_config: missing 'target' key"):
        instantiate_from_config(cfg.model.params.first_stage_config)


def test_nested_path_inside_plain_dict_defaults_to_config():
    with pytest.raises(ConfigError, match=r"^config: missing 'target'"):
        instantiate_from_config({"params": {}})
