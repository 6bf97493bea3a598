"""The discrete noise schedule of a diffusion model: betas -> the registered buffers.

`compute_schedule` turns betas into the 12 arrays the released checkpoints store, in float64
numpy exactly as the original `DDPM.register_schedule` does (they are cast to float32 only when
registered, so the buffers match the original bit for bit). `lvlb_weights` then weights the
per-timestep loss for the variational bound, computed from the float32 buffers as the original.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ldm.modules.diffusionmodules.util import (
    make_beta_schedule,
    rescale_zero_terminal_snr,
)

logger = logging.getLogger(__name__)

# The persistent buffers of every DDPM / LatentDiffusion, in the order the original registers
# (and so saves) them.
SCHEDULE_BUFFERS: tuple[str, ...] = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)

PARAMETERIZATIONS = ("eps", "x0", "v")


def make_betas(
    beta_schedule: str = "linear",
    timesteps: int = 1000,
    linear_start: float = 1e-4,
    linear_end: float = 2e-2,
    cosine_s: float = 8e-3,
    given_betas: np.ndarray | list[float] | None = None,
    zero_terminal_snr: bool = False,
) -> np.ndarray:
    """Float64 betas: `given_betas` if set, else `make_beta_schedule(...)`.

    With `zero_terminal_snr` the schedule is rescaled so that alpha-bar at the last step is
    exactly 0 (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed").
    """
    if given_betas is not None:
        betas = np.asarray(given_betas, dtype=np.float64)
    else:
        with torch.device("cpu"):  # real values even while a model is built on the meta device
            betas = make_beta_schedule(beta_schedule, timesteps, linear_start=linear_start,
                                       linear_end=linear_end, cosine_s=cosine_s)
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return np.asarray(betas, dtype=np.float64)


def compute_schedule(betas: np.ndarray, v_posterior: float = 0.0) -> dict[str, np.ndarray]:
    """The 12 schedule arrays (float64) for `betas`, keyed by buffer name.

    `posterior_variance = (1 - v) * beta * (1 - abar_prev) / (1 - abar) + v * beta`, and its log
    is clipped at 1e-20 (so index 0 holds log(1e-20), as the original).
    """
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1:
        raise ValueError(f"betas must be one-dimensional, got shape {betas.shape}")
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas, axis=0)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    # With a zero-terminal-SNR schedule alpha-bar[-1] == 0: 1 / alpha-bar is inf there, as it
    # mathematically is; the samplers never divide by it when the model predicts v.
    with np.errstate(divide="ignore"):
        posterior_variance = ((1 - v_posterior) * betas * (1.0 - alphas_cumprod_prev)
                              / (1.0 - alphas_cumprod) + v_posterior * betas)
        return {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
            "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
            "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
        }


def to_buffers(schedule: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The schedule arrays as float32 tensors (the cast the original applies when registering)."""
    # Explicitly on the CPU: a model built under `with torch.device("meta")` keeps real schedules.
    return {name: torch.tensor(schedule[name], dtype=torch.float32, device="cpu") for name in SCHEDULE_BUFFERS}


def lvlb_weights(schedule: dict[str, np.ndarray], parameterization: str) -> torch.Tensor:
    """Per-timestep weights of the variational-bound loss term, from `compute_schedule`'s arrays.

    eps: `beta^2 / (2 * posterior_variance * alpha * (1 - abar))` on the float32 buffers (alpha
    cast from float64); x0: `0.5 * sqrt(abar) / (2 * 1 - abar)` -- literally `2 - abar`, the
    original's formula, kept for compatibility; v: ones (as in Stable Diffusion 2). Index 0
    copies index 1 (the posterior variance is 0 there). Non-finite weights (a zero-terminal-SNR
    schedule with eps) are set to 0 so that the logged bound stays finite.
    """
    buffers = to_buffers(schedule)
    betas = buffers["betas"]
    alphas_cumprod = buffers["alphas_cumprod"]
    if parameterization == "eps":
        alphas = torch.tensor(1.0 - schedule["betas"], dtype=torch.float32, device="cpu")
        with np.errstate(divide="ignore", invalid="ignore"):
            weights = betas**2 / (2 * buffers["posterior_variance"] * alphas * (1 - alphas_cumprod))
    elif parameterization == "x0":
        # numpy's float32 sqrt, as the original (torch's differs in the last bit here and there)
        sqrt_ac = torch.from_numpy(np.sqrt(alphas_cumprod.numpy()))
        weights = 0.5 * sqrt_ac / (2.0 * 1 - alphas_cumprod)
    elif parameterization == "v":
        weights = torch.ones_like(betas)
    else:
        raise ValueError(f"unknown parameterization '{parameterization}'; expected one of {PARAMETERIZATIONS}")
    weights = weights.clone()
    weights[0] = weights[1]
    finite = torch.isfinite(weights)
    if not bool(finite.all()):
        logger.warning("lvlb_weights: %d non-finite weights set to 0 (zero-terminal-SNR schedule "
                       "with %s-parameterization?)", int((~finite).sum()), parameterization)
        weights = torch.where(finite, weights, torch.zeros_like(weights))
    return weights


def snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio abar / (1 - abar) per timestep (0 at a zero-terminal-SNR step)."""
    return alphas_cumprod / (1.0 - alphas_cumprod)
