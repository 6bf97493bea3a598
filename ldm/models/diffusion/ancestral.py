"""The ancestral DDPM sampler: T steps of x_{t-1} ~ p(x_{t-1} | x_t) (Ho et al. 2020, Algorithm 2).

Functions of a diffusion model `model` (a `DDPM` or `LatentDiffusion`) that provides
`apply_model(x, t, cond)`, `predict_start_from_model_output`, `q_posterior`, `q_sample`,
`num_timesteps`, `log_every_t` and `clip_denoised`. The models expose them as methods with the
original names (`p_mean_variance`, `p_sample`, `p_sample_loop`, `progressive_denoising`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from ldm.modules.diffusionmodules.util import noise_like


def p_mean_variance(model: Any, x: Tensor, c: Any, t: Tensor, clip_denoised: bool,
                    quantize_denoised: bool = False, return_x0: bool = False,
                    score_corrector: Any = None, corrector_kwargs: dict | None = None) -> tuple[Tensor, ...]:
    """Mean, variance and log-variance of p(x_{t-1} | x_t) (and the predicted x0 with `return_x0`)."""
    model_out = model.apply_model(x, t, c)
    if score_corrector is not None:
        if model.parameterization != "eps":
            raise ValueError("score_corrector needs an eps-parameterized model")
        model_out = score_corrector.modify_score(model, model_out, x, t, c, **(corrector_kwargs or {}))
    x_recon = model.predict_start_from_model_output(x, t, model_out)
    if clip_denoised:
        x_recon = x_recon.clamp(-1.0, 1.0)
    if quantize_denoised:
        x_recon, _, _ = model.first_stage_model.quantize(x_recon)
    mean, variance, log_variance = model.q_posterior(x_start=x_recon, x_t=x, t=t)
    if return_x0:
        return mean, variance, log_variance, x_recon
    return mean, variance, log_variance


@torch.no_grad()
def p_sample(model: Any, x: Tensor, c: Any, t: Tensor, clip_denoised: bool = False, repeat_noise: bool = False,
             quantize_denoised: bool = False, return_x0: bool = False, temperature: float = 1.0,
             noise_dropout: float = 0.0, score_corrector: Any = None,
             corrector_kwargs: dict | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """One ancestral step: mean + exp(0.5 * log_variance) * noise (no noise at t == 0)."""
    b = x.shape[0]
    mean, _, log_variance, x0 = p_mean_variance(
        model, x, c, t, clip_denoised=clip_denoised, quantize_denoised=quantize_denoised, return_x0=True,
        score_corrector=score_corrector, corrector_kwargs=corrector_kwargs)
    noise = noise_like(x.shape, x.device, repeat_noise, dtype=x.dtype) * temperature
    if noise_dropout > 0.0:
        noise = torch.nn.functional.dropout(noise, p=noise_dropout)
    nonzero_mask = (1 - (t == 0).float()).reshape(b, *((1,) * (x.ndim - 1)))
    out = mean + nonzero_mask * (0.5 * log_variance).exp() * noise
    return (out, x0) if return_x0 else out


def _noised_condition(model: Any, cond: Any, ts: Tensor) -> Any:
    """The original's `num_timesteps_cond > 1` option: the condition is itself diffused."""
    if not getattr(model, "shorten_cond_schedule", False):
        return cond
    if model.model.conditioning_key == "hybrid":
        raise ValueError("num_timesteps_cond > 1 does not support hybrid conditioning")
    tc = model.cond_ids[ts.cpu()].to(cond.device)
    return model.q_sample(x_start=cond, t=tc, noise=torch.randn_like(cond))


@torch.no_grad()
def p_sample_loop(model: Any, cond: Any, shape: Sequence[int], return_intermediates: bool = False,
                  x_T: Tensor | None = None, verbose: bool = True, callback: Callable | None = None,
                  timesteps: int | None = None, quantize_denoised: bool = False, mask: Tensor | None = None,
                  x0: Tensor | None = None, img_callback: Callable | None = None, start_T: int | None = None,
                  log_every_t: int | None = None) -> Tensor | tuple[Tensor, list[Tensor]]:
    """Sample from noise (or `x_T`) through every timestep; with `mask` and `x0` the masked-out
    region (mask 1) is kept from `x0` noised to the current step (latent inpainting)."""
    log_every_t = log_every_t or model.log_every_t
    device = model.betas.device
    b = shape[0]
    img = torch.randn(shape, device=device) if x_T is None else x_T
    intermediates = [img]
    timesteps = model.num_timesteps if timesteps is None else timesteps
    if start_T is not None:
        timesteps = min(timesteps, start_T)
    if mask is not None:
        if x0 is None:
            raise ValueError("p_sample_loop: a mask needs x0")
        if x0.shape[2:] != mask.shape[2:]:
            raise ValueError(f"p_sample_loop: mask size {tuple(mask.shape[2:])} != x0 size {tuple(x0.shape[2:])}")
    for i in tqdm(reversed(range(timesteps)), desc="Sampling t", total=timesteps, disable=not verbose):
        ts = torch.full((b,), i, device=device, dtype=torch.long)
        cond = _noised_condition(model, cond, ts)
        img = p_sample(model, img, cond, ts, clip_denoised=model.clip_denoised, quantize_denoised=quantize_denoised)
        if mask is not None:
            img = model.q_sample(x0, ts) * mask + (1.0 - mask) * img
        if i % log_every_t == 0 or i == timesteps - 1:
            intermediates.append(img)
        if callback:
            callback(i)
        if img_callback:
            img_callback(img, i)
    return (img, intermediates) if return_intermediates else img


@torch.no_grad()
def progressive_denoising(model: Any, cond: Any, shape: Sequence[int], verbose: bool = True,
                          callback: Callable | None = None, quantize_denoised: bool = False,
                          img_callback: Callable | None = None, mask: Tensor | None = None,
                          x0: Tensor | None = None, temperature: float | Sequence[float] = 1.0,
                          noise_dropout: float = 0.0, score_corrector: Any = None,
                          corrector_kwargs: dict | None = None, batch_size: int | None = None,
                          x_T: Tensor | None = None, start_T: int | None = None,
                          log_every_t: int | None = None) -> tuple[Tensor, list[Tensor]]:
    """Like `p_sample_loop`, but the intermediates are the predicted x0 at the logged steps."""
    log_every_t = log_every_t or model.log_every_t
    timesteps = model.num_timesteps
    if batch_size is not None:
        b = batch_size
        shape = [batch_size] + list(shape)
    else:
        b = batch_size = shape[0]
    img = torch.randn(shape, device=model.device) if x_T is None else x_T
    if cond is not None:
        cond = slice_condition(cond, batch_size)
    if start_T is not None:
        timesteps = min(timesteps, start_T)
    if isinstance(temperature, float):
        temperature = [temperature] * timesteps
    intermediates = []
    for i in tqdm(reversed(range(timesteps)), desc="Progressive Generation", total=timesteps, disable=not verbose):
        ts = torch.full((b,), i, device=model.device, dtype=torch.long)
        cond = _noised_condition(model, cond, ts)
        img, x0_partial = p_sample(model, img, cond, ts, clip_denoised=model.clip_denoised,
                                   quantize_denoised=quantize_denoised, return_x0=True,
                                   temperature=temperature[i], noise_dropout=noise_dropout,
                                   score_corrector=score_corrector, corrector_kwargs=corrector_kwargs)
        if mask is not None:
            if x0 is None:
                raise ValueError("progressive_denoising: a mask needs x0")
            img = model.q_sample(x0, ts) * mask + (1.0 - mask) * img
        if i % log_every_t == 0 or i == timesteps - 1:
            intermediates.append(x0_partial)
        if callback:
            callback(i)
        if img_callback:
            img_callback(img, i)
    return img, intermediates


def slice_condition(cond: Any, n: int) -> Any:
    """The first `n` rows of a condition (tensor, list of tensors, or dict of either)."""
    if isinstance(cond, dict):
        return {k: ([x[:n] for x in v] if isinstance(v, list) else v[:n]) for k, v in cond.items()}
    if isinstance(cond, list):
        return [c[:n] for c in cond]
    return cond[:n]
