"""Every latent-diffusion config builds, and the released layouts equal their manifests.

Covers our configs (`configs/ldm/*`, `configs/latent-diffusion/*`, `configs/stable-diffusion/*`,
`models/ldm/*/config.yaml`) and the original YAML files unchanged (except what the manifests'
`overrides` record, first-stage checkpoints set to null, and for SD v1 the CLIP `version`
pointed at a config-only folder this test writes). Models are built on the meta device.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from ldm.util import get_obj_from_str, instantiate_from_config

REPO = Path(__file__).resolve().parents[2]
LD = "original-configs/latent-diffusion"

# config (ours: repo-relative; originals: reference-relative) -> manifest (None: build only)
OURS = {
    "configs/ldm/celebahq.yaml": "ldm_celeba256",
    "configs/ldm/ffhq.yaml": "ldm_ffhq256",
    "configs/ldm/lsun_churches.yaml": "ldm_lsun_churches256",
    "configs/ldm/lsun_bedrooms.yaml": "ldm_lsun_beds256",
    "configs/ldm/cin256.yaml": "ldm_cin256",
    "configs/ldm/txt2img.yaml": "ldm_text2img256",
    "configs/ldm/inpainting.yaml": "ldm_inpainting_big",
    "configs/ldm/sr_bsr.yaml": "ldm_bsr_sr",
    "configs/ldm/layout2img.yaml": "ldm_layout2img-openimages256",
    "configs/ldm/semantic_synthesis.yaml": "ldm_semantic_synthesis256",
    "configs/latent-diffusion/celebahq-ldm-vq-4.yaml": "ldm_celeba256",
    "configs/latent-diffusion/cin-ldm-vq-f8.yaml": "ldm_cin256",
    "configs/latent-diffusion/cin256-v2.yaml": "ldm_cin256-v2",
    "configs/latent-diffusion/ffhq-ldm-vq-4.yaml": "ldm_ffhq256",
    "configs/latent-diffusion/lsun_bedrooms-ldm-vq-4.yaml": "ldm_lsun_beds256",
    "configs/latent-diffusion/lsun_churches-ldm-kl-8.yaml": "ldm_lsun_churches256",
    "configs/latent-diffusion/txt2img-1p4B-eval.yaml": "ldm_txt2img-1p4B-eval",
    "configs/stable-diffusion/v1-inference.yaml": "sd_v1-inference",
    **{f"models/ldm/{name}/config.yaml": f"ldm_{name}" for name in (
        "celeba256", "ffhq256", "lsun_churches256", "lsun_beds256", "cin256", "text2img256", "inpainting_big",
        "semantic_synthesis256", "bsr_sr", "layout2img-openimages256")},
}
ORIGINALS = {
    **{f"{LD}/models/ldm/{name}/config.yaml": f"ldm_{name}" for name in (
        "celeba256", "ffhq256", "lsun_churches256", "lsun_beds256", "cin256", "text2img256", "inpainting_big",
        "semantic_synthesis256", "bsr_sr", "layout2img-openimages256")},
    f"{LD}/models/ldm/semantic_synthesis512/config.yaml": None,
    **{f"{LD}/configs/latent-diffusion/{name}.yaml": manifest for name, manifest in (
        ("celebahq-ldm-vq-4", "ldm_celeba256"), ("cin-ldm-vq-f8", "ldm_cin256"), ("cin256-v2", "ldm_cin256-v2"),
        ("ffhq-ldm-vq-4", "ldm_ffhq256"), ("lsun_bedrooms-ldm-vq-4", "ldm_lsun_beds256"),
        ("lsun_churches-ldm-kl-8", "ldm_lsun_churches256"), ("txt2img-1p4B-eval", "ldm_txt2img-1p4B-eval"))},
    f"{LD}/configs/retrieval-augmented-diffusion/768x768.yaml": None,
    "original-configs/stable-diffusion/configs/stable-diffusion/v1-inference.yaml": "sd_v1-inference",
}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, reference_dir):
    """A config-only CLIP folder: the ViT-L/14 text config (random weights) and a two-token
    tokenizer (the models are only built here, never run)."""
    import json

    from transformers import CLIPTextConfig

    directory = tmp_path_factory.mktemp("clip-vit-l-14")
    versions = json.loads((reference_dir / "manifests" / "clip_text_keys_by_transformers_version.json").read_text())
    CLIPTextConfig(**versions["config"]).save_pretrained(directory)
    (directory / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return directory


def apply_manifest_overrides(cfg, manifest: dict) -> None:
    """Apply `path: old -> new` overrides recorded in a manifest (values parsed as YAML)."""
    for override in manifest.get("overrides", []):
        path, change = override.split(": ", 1)
        new = change.split(" -> ", 1)[1].split(" (", 1)[0]
        OmegaConf.update(cfg, path, yaml.safe_load(new), merge=False)


def prepare(cfg, manifest: dict | None, clip_dir: Path | None):
    cfg = copy.deepcopy(cfg)
    if manifest is not None:
        apply_manifest_overrides(cfg, manifest)
    params = cfg.model.params
    if "ckpt_path" in params.first_stage_config.get("params", {}):
        params.first_stage_config.params.ckpt_path = None  # the checkpoints are not here
    cond = params.get("cond_stage_config")
    if OmegaConf.is_dict(cond) and cond.target.endswith("FrozenCLIPEmbedder"):
        cond.params = {**(cond.get("params") or {}), "version": str(clip_dir)}
    return cfg


def build_on_meta(model_cfg) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-meta.*")
        with torch.device("meta"):
            return instantiate_from_config(model_cfg)


def check(model: torch.nn.Module, manifest: dict) -> None:
    layout = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert layout == list(manifest["state_dict"].items())
    for key in ("scale_factor_is_buffer", "parameterization", "conditioning_key", "use_ema", "num_timesteps"):
        actual = {"scale_factor_is_buffer": isinstance(model.scale_factor, torch.Tensor),
                  "parameterization": model.parameterization, "conditioning_key": model.model.conditioning_key,
                  "use_ema": model.use_ema, "num_timesteps": model.num_timesteps}[key]
        assert actual == manifest[key], key
    if not isinstance(model.scale_factor, torch.Tensor):  # a buffer is on the meta device here
        assert model.scale_factor == pytest.approx(manifest["scale_factor"])
    assert set(manifest["non_persistent_buffers_not_in_state_dict"]) <= {
        name for name, _ in model.named_buffers()} | {"cond_stage_model.transformer.text_model.embeddings.position_ids"}
    assert model.lvlb_weights.shape == (manifest["num_timesteps"],)


def _run(path: Path, manifest_name: str | None, load_manifest, clip_dir) -> None:
    manifest = load_manifest(manifest_name) if manifest_name else None
    cfg = prepare(OmegaConf.load(path), manifest, clip_dir)
    model = build_on_meta(cfg.model)
    if manifest is not None:
        check(model, manifest)


@pytest.mark.parametrize("path", sorted(OURS))
def test_our_configs_build_the_released_layout(path, load_manifest, clip_dir):
    _run(REPO / path, OURS[path], load_manifest, clip_dir)


@pytest.mark.parametrize("path", sorted(ORIGINALS))
def test_original_configs_build_unchanged(path, reference_dir, load_manifest, clip_dir):
    _run(reference_dir / path, ORIGINALS[path], load_manifest, clip_dir)


def test_inpainting_big_builds_with_its_dummy_loss(reference_dir, load_manifest):
    """The released config names `contperceptual.DummyLoss`, which exists here: no override needed."""
    cfg = OmegaConf.load(reference_dir / f"{LD}/models/ldm/inpainting_big/config.yaml")
    model = build_on_meta(cfg.model)
    check(model, load_manifest("ldm_inpainting_big"))
    assert model.cond_stage_model is model.first_stage_model


def test_our_copies_of_released_model_configs_are_verbatim(reference_dir):
    for path in OURS:
        if path.startswith("models/ldm/"):
            assert (REPO / path).read_text() == (reference_dir / LD / path).read_text(), path
    ours = (REPO / "configs/stable-diffusion/v1-inference.yaml").read_text()
    assert ours == (reference_dir / "original-configs/stable-diffusion/configs/stable-diffusion/"
                    "v1-inference.yaml").read_text()


@pytest.mark.parametrize("path", sorted(p for p in OURS if p.startswith("configs/")))
def test_our_training_configs_name_existing_targets(path):
    """Every target a training config names resolves (data sets, callbacks, schedulers), and
    first-stage checkpoints point at models/first_stage_models/<name>/model.ckpt."""
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / path), resolve=True)

    def targets(node):
        if isinstance(node, dict):
            if "target" in node:
                yield node["target"]
            for value in node.values():
                yield from targets(value)
        elif isinstance(node, list):
            for value in node:
                yield from targets(value)

    for target in targets(cfg):
        get_obj_from_str(target)
    first = cfg["model"]["params"]["first_stage_config"]["params"]
    if "ckpt_path" in first:
        assert Path(first["ckpt_path"]).parent.parent == Path("models/first_stage_models"), first["ckpt_path"]
        assert (REPO / Path(first["ckpt_path"]).parent / "config.yaml").is_file()
    if path.startswith("configs/ldm/"):
        assert "ckpt_path" in first and "data" in cfg and "lightning" in cfg
