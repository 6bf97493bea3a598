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

import numpy as np
import torch

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

    name = "PLMS"
    plms_sampling = ScheduleSampler.sampling_loop  # the original name of the loop

    def _stepper(self, guided: GuidedModel, cond: Conditioning, time_range: np.ndarray,
                 use_original_steps: bool, quantize_denoised: bool, temperature: float,
                 noise_dropout: float) -> Callable:
        old_eps: list[torch.Tensor] = []
        total_steps = time_range.shape[0]

        def step(i: int, x: torch.Tensor, ts: torch.Tensor, index: int):
            next_step = time_range[min(i + 1, total_steps - 1)]  # the last step re-uses t
            ts_next = torch.full((x.shape[0],), int(next_step), device=x.device, dtype=torch.long)
            x_prev, pred_x0, e_t = self._p_sample(guided, x, cond, ts, index, old_eps, ts_next, use_original_steps,
                                                  quantize_denoised, temperature, noise_dropout)
            old_eps.append(e_t)
            if len(old_eps) >= 4:
                old_eps.pop(0)
            return x_prev, pred_x0
        return step

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
