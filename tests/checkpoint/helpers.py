"""Helpers for the checkpoint tests: released-layout files from manifests, a module whose
state dict is a manifest's (on the meta device), malicious pickles."""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

# Manifest name -> the family `detect_family` must report.
EXPECTED_FAMILY = {
    "ldm_celeba256": "ldm/uncond-vq-f4",
    "ldm_ffhq256": "ldm/uncond-vq-f4",
    "ldm_lsun_beds256": "ldm/uncond-vq-f4",
    "ldm_txt2img-1p4B-eval": "ldm/txt2img-1p4B",
    "sd_v1-inference": "sd-v1",
}
# Manifest name -> our config building that model (relative to the repo root).
OUR_CONFIG = {
    "ldm_cin256-v2": "configs/latent-diffusion/cin256-v2.yaml",
    "ldm_txt2img-1p4B-eval": "configs/latent-diffusion/txt2img-1p4B-eval.yaml",
    "sd_v1-inference": "configs/stable-diffusion/v1-inference.yaml",
}
# Extras that released files carry beyond what a model built for inference holds.
FIRST_STAGE_LOSS_EXTRAS = {
    "loss.logvar": [],
    "loss.perceptual_loss.lin0.model.1.weight": [1, 64, 1, 1],
    "loss.discriminator.main.0.weight": [64, 3, 4, 4],
}
CLIP_POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"


def expected_family(manifest_name: str) -> str:
    if manifest_name in EXPECTED_FAMILY:
        return EXPECTED_FAMILY[manifest_name]
    if manifest_name.startswith("first_stage_"):
        return "first_stage/" + manifest_name[len("first_stage_"):]
    return "ldm/" + manifest_name[len("ldm_"):]


def our_config(manifest_name: str) -> str:
    if manifest_name in OUR_CONFIG:
        return OUR_CONFIG[manifest_name]
    if manifest_name.startswith("first_stage_"):
        return f"models/first_stage_models/{manifest_name[len('first_stage_'):]}/config.yaml"
    return f"models/ldm/{manifest_name[len('ldm_'):]}/config.yaml"


def constant_tensor(shape, value: float, dtype=torch.float32) -> torch.Tensor:
    """A tensor of `shape` that costs one element on disk (stride 0 everywhere)."""
    return torch.full((), value, dtype=dtype).expand(*shape) if shape else torch.full((), value, dtype=dtype)


def released_state_dict(manifest: Mapping) -> dict[str, torch.Tensor]:
    """The manifest's keys and shapes, each tensor a distinct constant, plus released extras."""
    int_keys = set(manifest.get("non_float32_dtypes", {}))
    sd = {}
    for i, (key, shape) in enumerate(manifest["state_dict"].items()):
        sd[key] = constant_tensor(shape, float(i), torch.int32 if key in int_keys else torch.float32)
    if manifest["target"].endswith(("AutoencoderKL", "VQModel", "VQModelInterface")):
        for key, shape in FIRST_STAGE_LOSS_EXTRAS.items():
            sd[key] = constant_tensor(shape, -1.0)
    if any(k.startswith("cond_stage_model.transformer.text_model.") for k in sd):
        sd[CLIP_POSITION_IDS] = torch.arange(77).unsqueeze(0)
    return sd


def write_released(path: str, state_dict: Mapping[str, torch.Tensor], global_step: int = 470000) -> str:
    """A checkpoint in the layout of the released files (Lightning 1.x wrapper, no optimizer)."""
    torch.save({"epoch": 6, "global_step": global_step, "pytorch-lightning_version": "1.4.2",
                "state_dict": dict(state_dict)}, path)
    return path


class ManifestModule(nn.Module):
    """A module whose state dict has exactly the given keys and shapes, on the meta device."""

    def __init__(self, shapes: Mapping[str, list[int]]):
        super().__init__()
        for key, shape in shapes.items():
            *path, leaf = key.split(".")
            module: nn.Module = self
            for part in path:
                if part not in module._modules:
                    module.add_module(part, nn.Module())
                module = module._modules[part]
            module.register_parameter(leaf, nn.Parameter(torch.empty(shape, device="meta"), requires_grad=False))


class _RunsCode:
    """Unpickling this runs `touch MARKER` (only the test writes it; it must never run)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_malicious(path: str, marker: str, legacy: bool = False) -> str:
    obj = {"state_dict": {"w": torch.zeros(2)}, "payload": _RunsCode(marker)}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path
