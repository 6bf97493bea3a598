"""PLMS sampler: pseudo linear multistep (Liu et al., "Pseudo Numerical Methods for Diffusion
Models on Manifolds", ICLR 2022, Sec. 3.3, Eq. 12-13).

The first step is a pseudo improved Euler step (two model calls); later steps combine the
current and up to three previous noise predictions with Adams-Bashforth weights, then take a
DDIM (eta = 0) step with the combined prediction. Reproduces the original
`ldm.models.diffusion.plms.PLMSSampler` on the model's device and dtype.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from ldm.models.diffusion.ddim import ScheduleSampler, ddim_step
from ldm.models.diffusion.guidance import Conditioning, GuidedModel
from ldm.modules.diffusionmodules.util import noise_like

logger = logging.getLogger(__name__)


def plms_eps(e_t: torch.Tensor, old_eps: list[torch.Tensor]) -> torch.Tensor:
    """Adams-Bashforth combination of the current eps and the previous ones (oldest first).

    Orders 2-4 (PNDM Eq. 12); with no history this returns `e_t` (the caller then does the
    pseudo improved Euler step instead).
    """
    if len(old_eps) == 0:
        return e_t
    if len(old_eps) == 1:
        return (3 * e_t - old_eps[-1]) / 2
    if len(old_eps) == 2:
        return (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
    return (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24


class PLMSSampler(ScheduleSampler):
    """PLMS sampling with the original `sample(...)` interface (eta must be 0)."""

    def make_schedule(self, ddim_num_steps: int, ddim_discretize: str = "uniform",
                      ddim_eta: float = 0.0, verbose: bool = True) -> None:
        if ddim_eta != 0:
            raise ValueError("ddim_eta must be 0 for PLMS")
        super().make_schedule(ddim_num_steps, ddim_discretize, ddim_eta, verbose)

    @torch.no_grad()
    def sample(self, S: int, batch_size: int, shape: tuple, conditioning: Conditioning = None,
               callback: Callable | None = None, normals_sequence: Any = None,
               img_callback: Callable | None = None, quantize_x0: bool = False, eta: float = 0.0,
               mask: torch.Tensor | None = None, x0: torch.Tensor | None = None,
               temperature: float = 1.0, noise_dropout: float = 0.0, score_corrector: Any = None,
               corrector_kwargs: dict | None = None, verbose: bool = True,
               x_T: torch.Tensor | None = None, log_every_t: int = 100,
               unconditional_guidance_scale: float = 1.0,
               unconditional_conditioning: Conditioning = None, **kwargs: Any):
        """Sample `batch_size` latents of `shape` (C, H, W) in `S` PLMS steps: (samples, intermediates)."""
        self._check_batch(conditioning, batch_size)
        self.make_schedule(ddim_num_steps=S, ddim_eta=eta, verbose=verbose)
        size = (batch_size, *shape)
        return self.plms_sampling(
            conditioning, size, callback=callback, img_callback=img_callback,
            quantize_denoised=quantize_x0, mask=mask, x0=x0, ddim_use_original_steps=False,
            noise_dropout=noise_dropout, temperature=temperature, score_corrector=score_corrector,
            corrector_kwargs=corrector_kwargs, x_T=x_T, log_every_t=log_every_t,
            unconditional_guidance_scale=unconditional_guidance_scale,
            unconditional_conditioning=unconditional_conditioning, verbose=verbose,
        )

    @torch.no_grad()
    def plms_sampling(self, cond: Conditioning, shape: tuple, x_T: torch.Tensor | None = None,
                      ddim_use_original_steps: bool = False, callback: Callable | None = None,
                      timesteps: Any = None, quantize_denoised: bool = False,
                      mask: torch.Tensor | None = None, x0: torch.Tensor | None = None,
                      img_callback: Callable | None = None, log_every_t: int = 100,
                      temperature: float = 1.0, noise_dropout: float = 0.0,
                      score_corrector: Any = None, corrector_kwargs: dict | None = None,
                      unconditional_guidance_scale: float = 1.0,
                      unconditional_conditioning: Conditioning = None, verbose: bool = True):
        """The PLMS loop; same arguments and intermediates as `DDIMSampler.ddim_sampling`."""
        img = self._initial(shape, x_T)
        b = shape[0]
        guided = self._guided(unconditional_guidance_scale, unconditional_conditioning,
                              score_corrector, corrector_kwargs)
        time_range = self._time_range(timesteps, ddim_use_original_steps)
        total_steps = time_range.shape[0]
        intermediates = {"x_inter": [img], "pred_x0": [img]}
        old_eps: list[torch.Tensor] = []
        iterator = tqdm(time_range, desc="PLMS Sampler", total=total_steps, disable=not verbose)
        for i, step in enumerate(iterator):
            index = total_steps - i - 1
            ts = torch.full((b,), int(step), device=img.device, dtype=torch.long)
            next_step = time_range[min(i + 1, total_steps - 1)]  # the last step re-uses t
            ts_next = torch.full((b,), int(next_step), device=img.device, dtype=torch.long)
            if mask is not None:
                if x0 is None:
                    raise ValueError("mask needs x0 (the latent whose masked region is kept)")
                img_orig = self.model.q_sample(x0, ts)
                img = img_orig * mask + (1.0 - mask) * img
            img, pred_x0, e_t = self._p_sample(
                guided, img, cond, ts, index, old_eps, ts_next, ddim_use_original_steps,
                quantize_denoised, temperature, noise_dropout)
            old_eps.append(e_t)
            if len(old_eps) >= 4:
                old_eps.pop(0)
            if callback:
                callback(i)
            if img_callback:
                img_callback(pred_x0, i)
            if index % log_every_t == 0 or index == total_steps - 1:
                intermediates["x_inter"].append(img)
                intermediates["pred_x0"].append(pred_x0)
        return img, intermediates

    def _p_sample(self, guided: GuidedModel, x: torch.Tensor, c: Conditioning, t: torch.Tensor,
                  index: int, old_eps: list[torch.Tensor], t_next: torch.Tensor,
                  use_original_steps: bool = False, quantize_denoised: bool = False,
                  temperature: float = 1.0, noise_dropout: float = 0.0, repeat_noise: bool = False):
        coefs = self._coefficients(index, x.shape[0], x, use_original_steps)
        quantize = self._quantizer(quantize_denoised)

        def step(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            noise = noise_like(x.shape, x.device, repeat_noise, dtype=x.dtype)
            return ddim_step(x, e, *coefs, noise, temperature, noise_dropout, quantize)

        e_t = guided.eps(x, t, c)
        if len(old_eps) == 0:  # pseudo improved Euler (2nd order)
            x_prev, _ = step(e_t)
            e_t_next = guided.eps(x_prev, t_next, c)
            e_t_prime = (e_t + e_t_next) / 2
        else:
            e_t_prime = plms_eps(e_t, old_eps)
        x_prev, pred_x0 = step(e_t_prime)
        return x_prev, pred_x0, e_t

    @torch.no_grad()
    def p_sample_plms(self, x: torch.Tensor, c: Conditioning, t: torch.Tensor, index: int,
                      repeat_noise: bool = False, use_original_steps: bool = False,
                      quantize_denoised: bool = False, temperature: float = 1.0,
                      noise_dropout: float = 0.0, score_corrector: Any = None,
                      corrector_kwargs: dict | None = None, unconditional_guidance_scale: float = 1.0,
                      unconditional_conditioning: Conditioning = None,
                      old_eps: list[torch.Tensor] | None = None, t_next: torch.Tensor | None = None):
        """One PLMS step: (x_prev, pred_x0, e_t) with e_t the raw eps to append to `old_eps`."""
        guided = self._guided(unconditional_guidance_scale, unconditional_conditioning,
                              score_corrector, corrector_kwargs)
        return self._p_sample(guided, x, c, t, index, old_eps or [], t if t_next is None else t_next,
                              use_original_steps, quantize_denoised, temperature, noise_dropout,
                              repeat_noise)
