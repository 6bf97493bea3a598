"""Tiny diffusion configs and data sets for the model tests (CPU, seconds)."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch.utils.data import Dataset

from ldm.util import instantiate_from_config

LDM = "ldm.models.diffusion.ddpm.LatentDiffusion"

UNET_XATTN = {
    "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
    "params": {"image_size": 8, "in_channels": 4, "out_channels": 4, "model_channels": 32,
               "attention_resolutions": [], "num_res_blocks": 1, "channel_mult": [1], "num_heads": 4,
               "use_spatial_transformer": True, "transformer_depth": 1, "context_dim": 16, "legacy": False},
}
UNET_PLAIN = {
    "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
    "params": {"image_size": 8, "in_channels": 4, "out_channels": 4, "model_channels": 32,
               "attention_resolutions": [], "num_res_blocks": 1, "channel_mult": [1], "num_heads": 1},
}
TINY_KL = {
    "target": "ldm.models.autoencoder.AutoencoderKL",
    "params": {"embed_dim": 4, "lossconfig": {"target": "torch.nn.Identity"},
               "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 16, "in_channels": 3, "out_ch": 3,
                            "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
                            "dropout": 0.0}},
}


def ldm_params(**overrides: Any) -> dict[str, Any]:
    """A tiny cross-attention LatentDiffusion (identity first stage, identity condition encoder)."""
    params = {
        "linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000, "first_stage_key": "image",
        "cond_stage_key": "context", "image_size": 8, "channels": 4, "conditioning_key": "crossattn",
        "monitor": "val/loss_simple_ema", "scale_factor": 1.0, "use_ema": False,
        "unet_config": copy.deepcopy(UNET_XATTN),
        "first_stage_config": {"target": "ldm.models.autoencoder.IdentityFirstStage"},
        "cond_stage_config": {"target": "torch.nn.Identity"},
    }
    params.update(overrides)
    return params


def make_ldm(**overrides: Any):
    return instantiate_from_config({"target": LDM, "params": ldm_params(**overrides)})


def unconditional_kl_params(**overrides: Any) -> dict[str, Any]:
    """A tiny unconditional LatentDiffusion on 16x16 RGB images with a tiny AutoencoderKL (f=2)."""
    params = {
        "linear_start": 0.0015, "linear_end": 0.0155, "timesteps": 1000, "first_stage_key": "image",
        "cond_stage_key": "image", "image_size": 8, "channels": 4, "concat_mode": False,
        "monitor": "val/loss_simple_ema", "use_ema": True, "log_every_t": 250,
        "unet_config": copy.deepcopy(UNET_PLAIN),
        "first_stage_config": copy.deepcopy(TINY_KL),
        "cond_stage_config": "__is_unconditional__",
    }
    params.update(overrides)
    return params


class BlobImages(Dataset):
    """Deterministic 16x16 RGB images (a bright square on a dark background), HWC in [-1, 1],
    with a caption, a class label and a mask, as the data loaders yield them."""

    def __init__(self, size: int = 16, length: int = 32, seed: int = 0):
        self.size, self.length, self.seed = size, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(self.seed * 100003 + i)
        s = self.size
        image = torch.full((s, s, 3), -0.8)
        y, x = torch.randint(0, s // 2, (2,), generator=g).tolist()
        color = torch.rand(3, generator=g) * 1.6 - 0.8
        image[y:y + s // 2, x:x + s // 2] = color
        mask = torch.zeros(s, s)
        mask[s // 4:3 * s // 4, s // 4:3 * s // 4] = 1.0
        return {"image": image, "caption": f"a square at {x},{y}", "class_label": i % 3, "mask": mask}
