"""Every first-stage config builds a model whose state dict matches the released layout
(`manifests/first_stage_*.json`), for the original YAML files unchanged, our copies under
`models/first_stage_models/`, and our training configs under `configs/autoencoder/`.

Models are built on the meta device (no memory, no init cost). As the manifests record, the
training loss is replaced by `torch.nn.Identity` for the key comparison; the unchanged files
are also built with their real loss (LPIPS weights from files the test writes), whose
`loss.*` keys must be exactly the taming layout.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from omegaconf import OmegaConf

from ldm.util import get_obj_from_str, instantiate_from_config
from tests.test_lpips import write_lin_file, write_vgg16_file

RELEASED = ["kl-f4", "kl-f8", "kl-f16", "kl-f32", "vq-f4", "vq-f4-noattn", "vq-f8", "vq-f8-n256", "vq-f16"]
ORIGINAL_DIR = "original-configs/latent-diffusion/models/first_stage_models"
# our training configs -> the released model with the same architecture
TRAINING_CONFIGS = {
    "autoencoder_kl_64x64x3": "kl-f4", "autoencoder_kl_32x32x4": "kl-f8",
    "autoencoder_kl_16x16x16": "kl-f16", "autoencoder_kl_8x8x64": "kl-f32",
    "autoencoder_vq_f4": "vq-f4", "autoencoder_vq_f8": "vq-f8", "autoencoder_vq_f16": "vq-f16",
}


def _build_on_meta(model_cfg) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
        with torch.device("meta"):
            return instantiate_from_config(model_cfg)


def _layout(model: torch.nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


def _with_identity_loss(cfg, manifest: dict):
    assert any("lossconfig" in o and "torch.nn.Identity" in o for o in manifest["overrides"]), manifest["overrides"]
    cfg = copy.deepcopy(cfg)
    cfg.model.params.lossconfig = {"target": "torch.nn.Identity"}
    return cfg


def _check_against_manifest(model: torch.nn.Module, manifest: dict) -> None:
    assert _layout(model) == list(manifest["state_dict"].items())
    assert sum(p.numel() for p in model.parameters()) == manifest["total_parameters_deduplicated"]


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips_weights")
    return write_vgg16_file(d / "vgg16-397923af.pth"), write_lin_file(d / "vgg.pth")


@pytest.mark.parametrize("name", RELEASED)
@pytest.mark.parametrize("source", ["original", "ours"])
def test_released_config_matches_manifest(name, source, reference_dir, repo_root, load_manifest):
    manifest = load_manifest(f"first_stage_{name}")
    path = (reference_dir / ORIGINAL_DIR / name / "config.yaml" if source == "original"
            else repo_root / "models" / "first_stage_models" / name / "config.yaml")
    model = _build_on_meta(_with_identity_loss(OmegaConf.load(path), manifest).model)
    assert type(model).__name__ == manifest["instantiated_class"].rsplit(".", 1)[1]
    _check_against_manifest(model, manifest)


@pytest.mark.parametrize("name", RELEASED)
def test_our_copies_are_the_released_files(name, reference_dir, repo_root):
    ours = repo_root / "models" / "first_stage_models" / name / "config.yaml"
    assert ours.read_bytes() == (reference_dir / ORIGINAL_DIR / name / "config.yaml").read_bytes()


@pytest.mark.parametrize("name", RELEASED)
def test_unchanged_original_config_builds_with_its_real_loss(name, reference_dir, load_manifest,
                                                              lpips_files, monkeypatch):
    vgg, lin = lpips_files
    monkeypatch.setenv("LDM_VGG16_WEIGHTS", str(vgg))
    monkeypatch.setenv("LDM_LPIPS_WEIGHTS", str(lin))
    cfg = OmegaConf.load(reference_dir / ORIGINAL_DIR / name / "config.yaml")
    model = _build_on_meta(cfg.model)
    manifest = load_manifest(f"first_stage_{name}")
    layout = _layout(model)
    assert [(k, v) for k, v in layout if not k.startswith("loss.")] == list(manifest["state_dict"].items())
    loss_keys = [k for k, _ in layout if k.startswith("loss.")]
    lpips_keys = [k for k in loss_keys if k.startswith("loss.perceptual_loss.")]
    assert len(lpips_keys) == 2 + 26 + 5  # scaling layer, 13 VGG convs, 5 heads
    assert "loss.perceptual_loss.net.slice1.0.weight" in lpips_keys
    assert "loss.perceptual_loss.lin4.model.1.weight" in lpips_keys
    n_layers = cfg.model.params.lossconfig.params.get("disc_num_layers", 3)
    disc_convs = [k for k in loss_keys if k.startswith("loss.discriminator.") and k.endswith(".weight")
                  and len(dict(layout)[k]) == 4]
    assert len(disc_convs) == n_layers + 2
    assert dict(layout)["loss.discriminator.main.0.weight"] == [64, 3, 4, 4]
    expected_other = {"loss.logvar"} if name.startswith("kl") else set()
    assert set(loss_keys) - set(lpips_keys) - {k for k in loss_keys if k.startswith("loss.discriminator.")} \
        == expected_other


@pytest.mark.parametrize("config_name", sorted(TRAINING_CONFIGS))
def test_training_config_builds_the_released_architecture(config_name, repo_root, load_manifest):
    released = TRAINING_CONFIGS[config_name]
    manifest = load_manifest(f"first_stage_{released}")
    cfg = OmegaConf.load(repo_root / "configs" / "autoencoder" / f"{config_name}.yaml")
    _check_against_manifest(_build_on_meta(_with_identity_loss(cfg, manifest).model), manifest)
    # the loss and data targets are our own classes, not taming names
    loss_target = cfg.model.params.lossconfig.target
    assert loss_target.startswith("ldm.modules.losses.")
    assert get_obj_from_str(loss_target).__module__.startswith("ldm.modules.losses.")
    for split in ("train", "validation"):
        assert cfg.data.params[split].target.startswith("ldm.data.")
    targets = [cfg.data.target, cfg.data.params.train.target, cfg.data.params.validation.target,
               *(cb.target for cb in cfg.lightning.callbacks.values())]
    for target in targets:  # every target of the file resolves in this project
        assert get_obj_from_str(target) is not None, target
    assert "accumulate_grad_batches" not in cfg.lightning.get("trainer", {})  # manual optimization


@pytest.mark.parametrize("config_name", [n for n in sorted(TRAINING_CONFIGS) if "_kl_" in n])
def test_kl_training_configs_keep_the_original_model_section(config_name, reference_dir, repo_root):
    ours = OmegaConf.to_container(OmegaConf.load(repo_root / "configs" / "autoencoder" / f"{config_name}.yaml"))
    original = OmegaConf.to_container(OmegaConf.load(
        reference_dir / "original-configs/latent-diffusion/configs/autoencoder" / f"{config_name}.yaml"))
    assert ours["model"]["params"].pop("accumulate_grad_batches") == \
        original["lightning"]["trainer"]["accumulate_grad_batches"]
    assert ours["model"] == original["model"]


def test_unknown_config_parameter_is_rejected():
    cfg = {"target": "ldm.models.autoencoder.AutoencoderKL",
           "params": {"embed_dim": 4, "lossconfig": {"target": "torch.nn.Identity"}, "ddconfig": {},
                      "not_a_param": 1}}
    with pytest.raises(Exception, match="not_a_param"):
        instantiate_from_config(cfg)


def test_dummy_loss_target_of_inpainting_big_exists():
    loss = instantiate_from_config({"target": "ldm.modules.losses.contperceptual.DummyLoss"})
    assert list(loss.state_dict()) == []
