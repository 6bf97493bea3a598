#!/usr/bin/env python
"""Convert checkpoints between formats and layouts.

    # .ckpt -> .safetensors (config embedded in the metadata) and back
    python scripts/convert_checkpoint.py model.ckpt model.safetensors --config configs/stable-diffusion/v1-inference.yaml
    python scripts/convert_checkpoint.py model.safetensors model.ckpt
    # keep only the EMA weights (as the model weights), in half precision
    python scripts/convert_checkpoint.py sd-v1-4-full-ema.ckpt sd-v1-4-ema.safetensors --ema-only --dtype fp16
    # Stable Diffusion v1 to the diffusers folder layout, and back
    python scripts/convert_checkpoint.py sd-v1-4.ckpt out/sd-v1-4-diffusers --to-diffusers
    python scripts/convert_checkpoint.py --from-diffusers out/sd-v1-4-diffusers sd-v1-4.ckpt

Only weights (and global_step/epoch) are carried over: optimizer and loop states are dropped.
Pickle inputs are read safely; `--unsafe-pickle` reads a trusted file the safe reader refuses.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from ldm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ldm.checkpoint.keymaps import EMA_PREFIX, ema_shadow_names, is_ema_shadow

logger = logging.getLogger("convert_checkpoint")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Buffers that keep float32 whatever the export dtype (the noise schedule, the latent scale).
KEEP_FP32 = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
             "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
             "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
             "posterior_mean_coef1", "posterior_mean_coef2", "scale_factor", "logvar")


def prune_to_ema(state_dict: dict) -> dict:
    """Replace each weight by its EMA shadow and drop `model_ema.*`."""
    if not any(is_ema_shadow(k) for k in state_dict):
        raise CheckpointError("--ema-only: the checkpoint has no EMA weights (model_ema.*)")
    out = {}
    for key, value in state_dict.items():
        if key.startswith(EMA_PREFIX):
            continue
        shadow = next((s for s in ema_shadow_names(key) if s in state_dict), None)
        out[key] = state_dict[shadow] if shadow else value
    return out


def cast(state_dict: dict, dtype: torch.dtype) -> dict:
    return {k: (v.to(dtype) if v.is_floating_point() and k not in KEEP_FP32 else v) for k, v in state_dict.items()}


def convert(src: str, dst: str, config: str | None = None, ema_only: bool = False, dtype: str = "keep",
            to_diffusers: bool = False, from_diffusers: bool = False, unsafe_pickle: bool = False) -> None:
    if from_diffusers:
        from ldm.checkpoint.diffusers_io import import_diffusers

        ckpt = import_diffusers(src)
    else:
        ckpt = load_checkpoint(src, unsafe_pickle=unsafe_pickle)
    state_dict = dict(ckpt["state_dict"])
    if ema_only:
        state_dict = prune_to_ema(state_dict)
    if dtype != "keep":
        state_dict = cast(state_dict, DTYPES[dtype])
    cfg = ckpt.get("config")
    if config:
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.load(config), resolve=True)
    if to_diffusers:
        from ldm.checkpoint.diffusers_io import export_diffusers

        extras = export_diffusers(state_dict, dst, cfg)
        logger.info("wrote %s (%d keys kept in ldm_extras.safetensors)", dst, len(extras))
        return
    out = {"state_dict": state_dict}
    for key in ("global_step", "epoch"):
        if isinstance(ckpt.get(key), int):
            out[key] = ckpt[key]
    save_checkpoint(out, dst, config=cfg)
    logger.info("wrote %s (%d tensors)", dst, len(state_dict))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert checkpoints (.ckpt/.safetensors/diffusers).")
    parser.add_argument("src", help="input file (or diffusers folder with --from-diffusers)")
    parser.add_argument("dst", help="output file (.ckpt/.pt/.safetensors) or folder with --to-diffusers")
    parser.add_argument("--config", help="YAML config to embed (safetensors metadata / 'config' entry)")
    parser.add_argument("--ema-only", action="store_true", help="keep the EMA weights as the model weights, drop model_ema.*")
    parser.add_argument("--dtype", choices=["keep", *DTYPES], default="keep", help="cast float weights")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--to-diffusers", action="store_true", help="write the diffusers folder layout (SD v1)")
    group.add_argument("--from-diffusers", action="store_true", help="read a diffusers folder (SD v1)")
    parser.add_argument("--unsafe-pickle", action="store_true", help="allow pickles that run code (trusted files only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        convert(args.src, args.dst, args.config, args.ema_only, args.dtype, args.to_diffusers,
                args.from_diffusers, args.unsafe_pickle)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
