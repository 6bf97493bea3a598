"""The diffusion Lightning modules, under the import path the released configs name.

`ldm.models.diffusion.ddpm.{DDPM, LatentDiffusion, DiffusionWrapper}` are defined in small
files of this package and re-exported here:

| file | what |
| --- | --- |
| `pixel_ddpm.py` | `DDPM`: schedule wiring, q/p math, training hooks, EMA, optimizer |
| `latent_diffusion.py` | `LatentDiffusion`: first stage, conditions, scale_by_std, cached latents |
| `wrapper.py` | `DiffusionWrapper`: how conditions enter the network |
| `schedule.py` | betas -> the 12 schedule buffers, `lvlb_weights` |
| `losses.py` | targets (eps / x0 / v), min-SNR weights, offset noise, the loss combination |
| `conditioning.py` | condition inputs and encoders, conditioning dropout for guidance |
| `ancestral.py` | the ancestral DDPM sampler |
| `first_stage.py` | patch-wise coding and denoising (`split_input_params`) |
| `image_logging.py`, `latent_logging.py` | `log_images` |
"""
from __future__ import annotations

from ldm.models.diffusion.latent_diffusion import LatentDiffusion, disabled_train
from ldm.models.diffusion.pixel_ddpm import DDPM
from ldm.models.diffusion.wrapper import DiffusionWrapper

# The original's mapping of conditioning_key to the DiffusionWrapper argument.
__conditioning_keys__ = {"concat": "c_concat", "crossattn": "c_crossattn", "adm": "y"}

__all__ = ["DDPM", "DiffusionWrapper", "LatentDiffusion", "disabled_train"]
