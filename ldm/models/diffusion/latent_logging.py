"""`LatentDiffusion.log_images`: what the image-logging callback shows of a latent diffusion model.

Keys (each present when it applies): `inputs`, `reconstruction` (first-stage round trip),
`conditioning` (decoded condition, caption or class name as text, or the condition image),
`original_conditioning` (a many-channel map shown in colour), `masked_image` and
`inpainting_mask` (models with an inpainting mask channel), `diffusion_row`, `samples`, `denoise_row`,
`samples_x0_quantized` (VQ first stages), `samples_cfg_scale_<s>` (classifier-free guidance),
`samples_inpainting` / `samples_outpainting` with their `mask` (latent inpainting demo),
`progressive_row`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ldm.models.diffusion import image_logging
from ldm.models.diffusion.conditioning import batch_to_tensor
from ldm.models.diffusion.pixel_ddpm import select_keys


@torch.no_grad()
def log_latent_images(
    model: Any,
    batch: Mapping[str, Any],
    N: int = 8,
    n_row: int = 4,
    sample: bool = True,
    ddim_steps: int | None = 200,
    ddim_eta: float = 1.0,
    return_keys: Sequence[str] | None = None,
    quantize_denoised: bool = True,
    inpaint: bool = True,
    plot_denoise_rows: bool = False,
    plot_progressive_rows: bool = True,
    plot_diffusion_rows: bool = True,
    unconditional_guidance_scale: float = 1.0,
    unconditional_guidance_label: Any = None,
    **kwargs: Any,
) -> dict[str, Tensor]:
    """The image log of a `LatentDiffusion` (options as the original's `log_images`).

    Args:
        N: number of samples; n_row: samples in the diffusion row.
        sample: draw samples (with the EMA weights); ddim_steps: DDIM steps (None: ancestral);
        ddim_eta: DDIM eta; quantize_denoised: also sample with quantized x0 (VQ first stages);
        inpaint: latent inpainting / outpainting demo with a centre square;
        plot_*: the rows to draw; unconditional_guidance_scale: > 1 adds guided samples with the
        null condition `unconditional_guidance_label` (default: the model's null value).
    """
    use_ddim = ddim_steps is not None
    log: dict[str, Tensor] = {}
    z, c, x, xrec, xc = model.get_input(batch, model.first_stage_key, return_first_stage_outputs=True,
                                        force_c_encode=True, return_original_cond=True, bs=N)
    N = min(x.shape[0], N)
    n_row = min(x.shape[0], n_row)
    log["inputs"] = x
    log["reconstruction"] = xrec
    if model.model.conditioning_key is not None:
        _log_conditioning(model, batch, c, xc, x, N, log)

    if plot_diffusion_rows:
        log["diffusion_row"] = image_logging.diffusion_row(z[:n_row], model.q_sample, model.num_timesteps,
                                                           model.log_every_t, decode=model.decode_first_stage)
    if sample:
        with model.ema_scope("Plotting"):
            samples, z_denoise_row = model.sample_log(cond=c, batch_size=N, ddim=use_ddim, ddim_steps=ddim_steps,
                                                      eta=ddim_eta)
        log["samples"] = model.decode_first_stage(samples)
        if plot_denoise_rows:
            steps = z_denoise_row["x_inter"] if isinstance(z_denoise_row, dict) else z_denoise_row
            log["denoise_row"] = image_logging.denoise_row(steps, model.decode_first_stage)

        if quantize_denoised and model._is_vq():
            with model.ema_scope("Plotting Quantized Denoised"):
                samples, _ = model.sample_log(cond=c, batch_size=N, ddim=use_ddim, ddim_steps=ddim_steps,
                                              eta=ddim_eta, quantize_denoised=True)
            log["samples_x0_quantized"] = model.decode_first_stage(samples)

        if unconditional_guidance_scale > 1.0 and model.model.conditioning_key is not None:
            uc = model.get_unconditional_conditioning(N, unconditional_guidance_label)
            if model.concat_mask_key is not None and isinstance(c, Tensor):
                uc = torch.cat([uc, c[:, -1:]], dim=1)
            with model.ema_scope("Plotting guided samples"):
                samples, _ = model.sample_log(cond=c, batch_size=N, ddim=True, ddim_steps=ddim_steps or 50,
                                              eta=ddim_eta, unconditional_guidance_scale=unconditional_guidance_scale,
                                              unconditional_conditioning=uc)
            log[f"samples_cfg_scale_{unconditional_guidance_scale:.2f}"] = model.decode_first_stage(samples)

        if inpaint:
            h, w = z.shape[2], z.shape[3]
            mask = torch.ones(N, h, w, device=model.device)
            mask[:, h // 4:3 * h // 4, w // 4:3 * w // 4] = 0.0  # zeros are filled in
            mask = mask[:, None, ...]
            with model.ema_scope("Plotting Inpaint"):
                samples, _ = model.sample_log(cond=c, batch_size=N, ddim=use_ddim, eta=ddim_eta,
                                              ddim_steps=ddim_steps, x0=z[:N], mask=mask)
            log["samples_inpainting"] = model.decode_first_stage(samples)
            log["mask"] = mask
            with model.ema_scope("Plotting Outpaint"):
                samples, _ = model.sample_log(cond=c, batch_size=N, ddim=use_ddim, eta=ddim_eta,
                                              ddim_steps=ddim_steps, x0=z[:N], mask=1.0 - mask)
            log["samples_outpainting"] = model.decode_first_stage(samples)

    if plot_progressive_rows:
        with model.ema_scope("Plotting Progressives"):
            _, progressives = model.progressive_denoising(
                c, shape=(model.channels, model.image_size, model.image_size), batch_size=N, verbose=False)
        log["progressive_row"] = image_logging.denoise_row(progressives, model.decode_first_stage)
    return select_keys(log, return_keys)


def _log_conditioning(model: Any, batch: Mapping[str, Any], c: Any, xc: Any, x: Tensor, N: int,
                      log: dict[str, Tensor]) -> None:
    """The condition images of the log (see the module doc)."""
    size = (x.shape[3], x.shape[2])
    decoded = None
    if model.cond_stage_model is not None and hasattr(model.cond_stage_model, "decode") and isinstance(c, Tensor):
        channels = c.shape[1] - (1 if model.concat_mask_key is not None else 0)
        decoded = model.cond_stage_model.decode(c[:, :channels])
    image = image_logging.conditioning_images(batch, model.cond_stage_key, xc, size, decoded)
    if image is not None:
        log["conditioning"] = image[:N]
    if image_logging.is_map(xc):
        log["original_conditioning"] = model.to_rgb(xc)[:N]
    if model.concat_mask_key is not None and model.concat_mask_key in batch:
        log["inpainting_mask"] = _batch_image(batch, model.concat_mask_key)[:N].to(model.device)
        if "masked_image" in batch:
            log["masked_image"] = _batch_image(batch, "masked_image")[:N].to(model.device)


def _batch_image(batch: Mapping[str, Any], key: str) -> Tensor:
    return batch_to_tensor(batch, key)
