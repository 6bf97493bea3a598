"""Samplers in the sigma (variance-exploding) view of a discrete VP model: Euler-ancestral and
DPM-Solver++(2M) on a Karras schedule, with the DDIM sampler's `sample(...)` interface.

A VP latent x_vp at alpha-bar maps to x = x_vp * sqrt(1 + sigma^2) with
sigma = sqrt((1 - alpha_bar) / alpha_bar) (Karras et al., "Elucidating the Design Space of
Diffusion-Based Generative Models", NeurIPS 2022, Sec. 2 / Table 1 "VP"); the denoiser D(x, sigma)
calls the network at the fractional timestep whose log-sigma interpolates the model's table.
`x_T` is the VP start noise as for DDIM; samples and intermediates come back in VP scale.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from ldm.models.diffusion.dpm_solver import (
    dpmpp_2m_update,
    dpmpp_first_order_update,
    interpolate_piecewise_linear,
)
from ldm.models.diffusion.guidance import Conditioning, GuidedModel, SampleCall, Sampler, initial_latent, model_device

logger = logging.getLogger(__name__)

SCHEDULES = ("karras", "discrete")
METHODS = ("euler_ancestral", "dpmpp_2m")


# ---- schedules ---------------------------------------------------------------------------------

class DiscreteSigmas:
    """sigma(t) of a discrete VP schedule and its inverse, interpolated in log-sigma."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        ac = alphas_cumprod.detach().to(torch.float32)
        self.sigmas = ((1 - ac) / ac) ** 0.5
        self.log_sigmas = self.sigmas.log()
        self.timesteps = torch.arange(len(ac), dtype=torch.float32, device=ac.device)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        t = interpolate_piecewise_linear(sigma.log().reshape(-1), self.log_sigmas.to(sigma.device),
                                         self.timesteps.to(sigma.device))
        return t.clamp(0, len(self.sigmas) - 1)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        log_sigma = interpolate_piecewise_linear(t.reshape(-1).float(), self.timesteps.to(t.device),
                                                 self.log_sigmas.to(t.device))
        return log_sigma.exp()

    def discrete(self, n: int) -> torch.Tensor:
        """n sigmas at timesteps uniform in [T-1, 0], then 0."""
        t = torch.linspace(len(self.sigmas) - 1, 0, n, device=self.sigmas.device)
        return torch.cat([self.t_to_sigma(t), self.sigmas.new_zeros(1)])

    def karras(self, n: int, rho: float = 7.0) -> torch.Tensor:
        """n sigmas from sigma_max to sigma_min uniform in sigma^(1/rho) (Karras 2022, Eq. 5), then 0."""
        ramp = torch.linspace(0, 1, n, device=self.sigmas.device)
        lo, hi = self.sigma_min ** (1 / rho), self.sigma_max ** (1 / rho)
        sigmas = (hi + ramp * (lo - hi)) ** rho
        return torch.cat([sigmas, sigmas.new_zeros(1)])


def ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up) splitting a step into a deterministic part and fresh noise."""
    if not eta or sigma_to == 0:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * math.sqrt(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2))
    return math.sqrt(sigma_to**2 - sigma_up**2), sigma_up


# ---- samplers as functions over a denoiser D(x, sigma) -----------------------------------------

def sample_euler_ancestral(denoise: Callable, x: torch.Tensor, sigmas: list[float], eta: float = 1.0,
                           noise_fn: Callable = torch.randn_like, callback: Callable | None = None,
                           disable: bool = True) -> torch.Tensor:
    """Euler steps of the probability-flow ODE plus ancestral noise (k-diffusion's euler_a)."""
    for i in tqdm(range(len(sigmas) - 1), desc="Euler-ancestral Sampler", disable=disable):
        denoised = denoise(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0 and sigma_up > 0:
            x = x + noise_fn(x) * sigma_up
        if callback is not None:
            callback(i, x, denoised)
    return x


def sample_dpmpp_2m_sigmas(denoise: Callable, x: torch.Tensor, sigmas: list[float],
                           callback: Callable | None = None, disable: bool = True) -> torch.Tensor:
    """DPM-Solver++(2M) over a sigma schedule (first order on the first and the final step)."""
    def coefficients(sigma: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # lambda = -log sigma and sigma of the VE view (alpha = 1), as float32 on x's device
        return (torch.tensor([-math.log(sigma)], dtype=torch.float32, device=like.device),
                torch.tensor([sigma], dtype=torch.float32, device=like.device))

    old = None
    for i in tqdm(range(len(sigmas) - 1), desc="DPM++ 2M Sampler", disable=disable):
        denoised = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, sig_s = coefficients(sigmas[i], x)
            lam_t, sig_t = coefficients(sigmas[i + 1], x)
            one = torch.ones_like(sig_t)
            if old is None:
                upd = dpmpp_first_order_update(x, denoised, lam_s, lam_t, sig_s, sig_t, one)
            else:
                lam_p, _ = coefficients(sigmas[i - 1], x)
                upd = dpmpp_2m_update(x, old, denoised, lam_p, lam_s, lam_t, sig_s, sig_t, one)
            x = upd.to(x.dtype)
        old = denoised
        if callback is not None:
            callback(i, x, denoised)
    return x


# ---- the sampler class -------------------------------------------------------------------------

class KDiffusionSampler(Sampler):
    """Sigma-space samplers with the DDIM `sample(...)` interface.

    Args:
        model: a LatentDiffusion-like object (`apply_model`, `alphas_cumprod`, `betas`,
            `parameterization` 'eps', 'x0' or 'v').
        method: 'euler_ancestral' or 'dpmpp_2m'.
        schedule: 'karras' (Karras et al. 2022, rho = 7) or 'discrete' (uniform timesteps).
    """

    def __init__(self, model: Any, method: str = "euler_ancestral", schedule: str = "karras", **kwargs: Any) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method '{method}'; expected one of {METHODS}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule '{schedule}'; expected one of {SCHEDULES}")
        self.model = model
        self.method = method
        self.schedule = schedule
        self.sigma_table = DiscreteSigmas(model.alphas_cumprod.to(model_device(model)))

    def sigmas(self, steps: int) -> list[float]:
        """steps + 1 decreasing noise levels ending at 0."""
        if steps < 1:
            raise ValueError(f"number of sampling steps must be positive, got {steps}")
        table = self.sigma_table
        sig = table.karras(steps) if self.schedule == "karras" else table.discrete(steps)
        return [float(s) for s in sig]

    def _denoiser(self, guided: GuidedModel, cond: Conditioning) -> Callable:
        def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
            c_in = 1.0 / math.sqrt(sigma**2 + 1)
            b = x.shape[0]
            sigma_t = torch.full((b,), sigma, device=x.device)
            t = self.sigma_table.sigma_to_t(sigma_t)
            alpha = torch.full((b,), c_in, device=x.device)
            x0 = guided.x0(x * c_in, t, cond, alpha, alpha * sigma)
            return x0
        return denoise

    def _check_mask(self, mask: torch.Tensor | None) -> None:
        if mask is not None:
            raise ValueError(f"{self.method} does not support mask/x0 blending; use DDIM or PLMS")

    def _sample(self, call: SampleCall, ancestral_eta: float = 1.0, **kwargs: Any):
        """Sample in `S` model evaluations; returns `(samples, intermediates)` in VP scale.

        `eta` (DDIM's) is ignored; Euler-ancestral's noise amount is `ancestral_eta` (0 gives
        plain Euler on the probability-flow ODE; `sample(..., ancestral_eta=)`).
        """
        x_T = initial_latent(self.model, call.size, call.x_T)
        sigmas = self.sigmas(call.S)
        denoise = self._denoiser(call.guided(self.model), call.conditioning)
        intermediates = {"x_inter": [x_T], "pred_x0": [x_T]}
        on_step = call.step_logger(intermediates, lambda i, x: x / math.sqrt(1 + sigmas[i + 1] ** 2))
        x = x_T * math.sqrt(1 + sigmas[0] ** 2)
        if self.method == "euler_ancestral":
            x = sample_euler_ancestral(denoise, x, sigmas, ancestral_eta, callback=on_step, disable=not call.verbose)
        else:
            x = sample_dpmpp_2m_sigmas(denoise, x, sigmas, callback=on_step, disable=not call.verbose)
        return x, intermediates


class EulerAncestralSampler(KDiffusionSampler):
    """Euler-ancestral on the Karras schedule (k-diffusion's `sample_euler_ancestral`)."""

    def __init__(self, model: Any, schedule: str = "karras", **kwargs: Any) -> None:
        super().__init__(model, method="euler_ancestral", schedule=schedule)


class DPMPP2MKarrasSampler(KDiffusionSampler):
    """DPM-Solver++(2M) on the Karras schedule ("DPM++ 2M Karras")."""

    def __init__(self, model: Any, schedule: str = "karras", **kwargs: Any) -> None:
        super().__init__(model, method="dpmpp_2m", schedule=schedule)
