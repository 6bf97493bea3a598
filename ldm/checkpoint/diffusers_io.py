"""Export a Stable Diffusion v1 checkpoint to the diffusers folder layout, and import it back.

Folder written by `export_diffusers`:

    model_index.json
    unet/config.json, unet/diffusion_pytorch_model.safetensors
    vae/config.json, vae/diffusion_pytorch_model.safetensors
    text_encoder/config.json, text_encoder/model.safetensors
    scheduler/scheduler_config.json
    ldm_extras.safetensors   (ours: keys diffusers has no place for, e.g. the schedule buffers)

Tokenizer files are not written (they are not in a checkpoint): copy the CLIP ViT-L/14
tokenizer files into `tokenizer/` for diffusers pipelines. Configs are read from the tensor
shapes, with the LDM config (when given) for what shapes cannot tell (heads, image size).
Key names follow `diffusers_keymap`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ldm.checkpoint import diffusers_keymap as km
from ldm.checkpoint.errors import CheckpointError
from ldm.checkpoint.families import detect_family
from ldm.checkpoint.keymaps import to_released_layout
from ldm.checkpoint.saving import atomic_write, safetensors_payload

DIFFUSERS_VERSION = "0.6.0"
EXTRAS_FILE = "ldm_extras.safetensors"
UNET = "model.diffusion_model."
SCHEDULE_KEYS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
)


def _get(config: Any, *path: str, default: Any = None) -> Any:
    node = config
    for part in path:
        if node is None or not hasattr(node, "get"):
            return default
        node = node.get(part)
    return default if node is None else node


def _unet_config(sd: Mapping[str, torch.Tensor], config: Any) -> dict:
    unet = _get(config, "model", "params", "unet_config", "params", default={})
    conv_in = sd[UNET + "input_blocks.0.0.weight"]
    channels, attention = [], []
    for i in range(4):
        res = sd[UNET + f"input_blocks.{3 * i + 1}.0.out_layers.3.weight"]
        channels.append(int(res.shape[0]))
        attention.append(f"{UNET}input_blocks.{3 * i + 1}.1.proj_in.weight" in sd)
    context = [v.shape[1] for k, v in sd.items() if k.endswith("attn2.to_k.weight")]
    return {
        "_class_name": "UNet2DConditionModel", "_diffusers_version": DIFFUSERS_VERSION,
        "act_fn": "silu", "attention_head_dim": int(_get(unet, "num_heads", default=8)),
        "block_out_channels": channels, "center_input_sample": False,
        "cross_attention_dim": int(context[0]) if context else None,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0,
        "in_channels": int(conv_in.shape[1]), "layers_per_block": int(_get(unet, "num_res_blocks", default=2)),
        "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
        "out_channels": int(sd[UNET + "out.2.weight"].shape[0]),
        "sample_size": int(_get(unet, "image_size", default=64)),
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
    }


def _vae_config(sd: Mapping[str, torch.Tensor], config: Any) -> dict:
    dd = _get(config, "model", "params", "first_stage_config", "params", "ddconfig", default={})
    p = "first_stage_model."
    channels = [int(sd[f"{p}encoder.down.{i}.block.1.conv2.weight"].shape[0]) for i in range(4)]
    return {
        "_class_name": "AutoencoderKL", "_diffusers_version": DIFFUSERS_VERSION, "act_fn": "silu",
        "block_out_channels": channels, "down_block_types": ["DownEncoderBlock2D"] * 4,
        "in_channels": int(sd[p + "encoder.conv_in.weight"].shape[1]),
        "latent_channels": int(sd[p + "post_quant_conv.weight"].shape[1]), "layers_per_block": 2,
        "norm_num_groups": 32, "out_channels": int(sd[p + "decoder.conv_out.weight"].shape[0]),
        "sample_size": int(_get(dd, "resolution", default=256)),
        "scaling_factor": float(_get(config, "model", "params", "scale_factor", default=0.18215)),
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    }


def _text_config(sd: Mapping[str, torch.Tensor]) -> dict:
    p = "cond_stage_model.transformer.text_model."
    vocab, hidden = sd[p + "embeddings.token_embedding.weight"].shape
    layers = len({k.split(".")[5] for k in sd if k.startswith(p + "encoder.layers.")})
    return {
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
        "vocab_size": int(vocab), "hidden_size": int(hidden),
        "intermediate_size": int(sd[p + "encoder.layers.0.mlp.fc1.weight"].shape[0]),
        "num_hidden_layers": layers, "num_attention_heads": int(hidden) // 64,
        "max_position_embeddings": int(sd[p + "embeddings.position_embedding.weight"].shape[0]),
        "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05, "projection_dim": int(hidden),
        "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
    }


def _scheduler_config(sd: Mapping[str, torch.Tensor], config: Any) -> dict:
    params = _get(config, "model", "params", default={})
    betas = sd["betas"].double().numpy() if "betas" in sd else None
    start = _get(params, "linear_start", default=None)
    end = _get(params, "linear_end", default=None)
    if start is None and betas is not None:
        start, end = float(f"{betas[0]:.6g}"), float(f"{betas[-1]:.6g}")
    return {
        "_class_name": "PNDMScheduler", "_diffusers_version": DIFFUSERS_VERSION,
        # our "linear" schedule is linear in sqrt(beta): diffusers calls it "scaled_linear"
        "beta_schedule": "scaled_linear", "beta_start": start if start is not None else 0.00085,
        "beta_end": end if end is not None else 0.012,
        "num_train_timesteps": len(betas) if betas is not None else int(_get(params, "timesteps", default=1000)),
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False,
    }


def _write_json(path: str, data: dict) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(json.dumps(data, indent=2) + "\n")

    atomic_write(path, write)


def _save_tensors(path: str, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    payload = safetensors_payload(tensors)
    atomic_write(path, lambda tmp: save_file(payload, tmp, metadata={"format": "pt"}))


def export_diffusers(state_dict: Mapping[str, torch.Tensor], folder: str, config: Any = None) -> list[str]:
    """Write a SD v1 state dict as a diffusers folder; returns the keys kept in the extras file."""
    sd = to_released_layout(state_dict)
    family = detect_family(sd)
    if family is None or family.name not in ("sd-v1", "sd-v1-inpainting"):
        found = family.description if family else "an unknown model"
        raise CheckpointError(f"diffusers export supports Stable Diffusion v1 checkpoints only; this is {found}")
    parts, rest = km.split_for_diffusers(sd)
    os.makedirs(folder, exist_ok=True)
    for name, filename, _, _ in km.COMPONENTS:
        tensors = {}
        for ours, theirs in parts[name].items():
            t = sd[ours]
            if km.CONV1X1_AS_LINEAR.search(theirs) and t.ndim == 4:
                t = t[:, :, 0, 0]
            tensors[theirs] = t
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        _save_tensors(os.path.join(folder, name, filename), tensors)
    extras = {k: sd[k] for k in rest if not km.DIFFUSERS_EXTRAS.search(k)}
    if extras:
        _save_tensors(os.path.join(folder, EXTRAS_FILE), extras)
    _write_json(os.path.join(folder, "unet", "config.json"), _unet_config(sd, config))
    _write_json(os.path.join(folder, "vae", "config.json"), _vae_config(sd, config))
    _write_json(os.path.join(folder, "text_encoder", "config.json"), _text_config(sd))
    os.makedirs(os.path.join(folder, "scheduler"), exist_ok=True)
    _write_json(os.path.join(folder, "scheduler", "scheduler_config.json"), _scheduler_config(sd, config))
    _write_json(os.path.join(folder, "model_index.json"), {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": DIFFUSERS_VERSION,
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "safety_checker": None, "feature_extractor": None,
    })
    return sorted(extras)


def _read_component(folder: str, name: str, filename: str) -> dict[str, torch.Tensor]:
    from ldm.checkpoint.reading import load_checkpoint

    base = os.path.join(folder, name)
    candidates = [filename, filename.replace(".safetensors", ".bin"), "pytorch_model.bin"]
    for candidate in candidates:
        path = os.path.join(base, candidate)
        if os.path.isfile(path):
            return load_checkpoint(path)["state_dict"]
    raise CheckpointError(f"{folder}: no weights for '{name}' (looked for {', '.join(candidates)})")


def schedule_from_scheduler_config(path: str) -> dict[str, torch.Tensor]:
    """The 12 schedule buffers for a diffusers `scheduler_config.json` (scaled_linear/linear)."""
    from ldm.models.diffusion.schedule import compute_schedule, make_betas

    with open(path) as f:
        cfg = json.load(f)
    schedule = {"scaled_linear": "linear", "linear": "sqrt_linear"}.get(cfg.get("beta_schedule", "scaled_linear"))
    if cfg.get("trained_betas"):
        betas = np.asarray(cfg["trained_betas"], dtype=np.float64)
    elif schedule is None:
        raise CheckpointError(f"{path}: beta_schedule '{cfg.get('beta_schedule')}' is not supported")
    else:
        betas = make_betas(schedule, int(cfg.get("num_train_timesteps", 1000)),
                           float(cfg.get("beta_start", 0.00085)), float(cfg.get("beta_end", 0.012)))
    arrays = compute_schedule(betas)
    return {k: torch.tensor(arrays[k], dtype=torch.float32) for k in SCHEDULE_KEYS}


def import_diffusers(folder: str) -> dict[str, Any]:
    """Read a diffusers SD v1 folder into a checkpoint dict in our (released) layout."""
    state_dict: dict[str, torch.Tensor] = {}
    for name, filename, _, _ in km.COMPONENTS:
        for key, tensor in _read_component(folder, name, filename).items():
            if km.DIFFUSERS_EXTRAS.search(key):
                continue
            ours = km.from_diffusers_key(name, key)
            if ours is None:
                raise CheckpointError(f"{folder}/{name}: key '{key}' has no place in the SD v1 layout")
            if km.CONV1X1_AS_LINEAR.search(key) and tensor.ndim == 2:
                tensor = tensor[:, :, None, None]
            state_dict[ours] = tensor
    extras_path = os.path.join(folder, EXTRAS_FILE)
    if os.path.isfile(extras_path):
        from ldm.checkpoint.reading import read_safetensors

        state_dict.update(read_safetensors(extras_path)["state_dict"])
    else:
        state_dict.update(schedule_from_scheduler_config(os.path.join(folder, "scheduler", "scheduler_config.json")))
    return {"state_dict": state_dict}
