"""Diffusion math and UNet building blocks shared by the models and the samplers.

Schedules are computed in float64 (numpy/torch) and only cast to float32 by the caller, as
the original does, so that the registered buffers match the released checkpoints bit for bit.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from einops import repeat
from torch import nn
from torch.utils.checkpoint import checkpoint as torch_checkpoint

logger = logging.getLogger(__name__)

BETA_SCHEDULES = ("linear", "cosine", "sqrt_linear", "sqrt")


# ---- noise schedules ------------------------------------------------------------------------

def make_beta_schedule(
    schedule: str,
    n_timestep: int,
    linear_start: float = 1e-4,
    linear_end: float = 2e-2,
    cosine_s: float = 8e-3,
) -> np.ndarray:
    """Betas of a noise schedule as a float64 array of length `n_timestep`.

    Note: "linear" is linear in sqrt(beta) (the original's naming, kept for compatibility:
    the released checkpoints were trained with it); "sqrt_linear" is linear in beta.
    "cosine" is Nichol & Dhariwal (2021), Eq. 17, clipped to 0.999.
    """
    if schedule == "linear":
        betas = torch.linspace(linear_start**0.5, linear_end**0.5, n_timestep, dtype=torch.float64, device="cpu") ** 2
    elif schedule == "cosine":
        steps = torch.arange(n_timestep + 1, dtype=torch.float64, device="cpu") / n_timestep + cosine_s
        alphas = torch.cos(steps / (1 + cosine_s) * np.pi / 2).pow(2)
        alphas = alphas / alphas[0]
        betas = (1 - alphas[1:] / alphas[:-1]).clamp(min=0, max=0.999)
    elif schedule == "sqrt_linear":
        betas = torch.linspace(linear_start, linear_end, n_timestep, dtype=torch.float64, device="cpu")
    elif schedule == "sqrt":
        betas = torch.linspace(linear_start, linear_end, n_timestep, dtype=torch.float64, device="cpu") ** 0.5
    else:
        raise ValueError(f"unknown beta schedule '{schedule}'; expected one of {', '.join(BETA_SCHEDULES)}")
    return betas.numpy()


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Rescale betas so that the last step has zero SNR (Lin et al. 2024, Algorithm 1).

    sqrt(alphas_cumprod) is shifted so its last value is 0 and scaled so its first value is
    unchanged; the result has `alphas_cumprod[-1] == 0` exactly.
    """
    alphas_bar_sqrt = np.sqrt(np.cumprod(1.0 - np.asarray(betas, dtype=np.float64)))
    first, last = alphas_bar_sqrt[0], alphas_bar_sqrt[-1]
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1.0 - alphas


def make_ddim_timesteps(
    ddim_discr_method: str, num_ddim_timesteps: int, num_ddpm_timesteps: int, verbose: bool = True
) -> np.ndarray:
    """The DDPM timesteps a DDIM sampler visits, ascending.

    "uniform" is `range(0, T, T // S) + 1` exactly as the original (first step 1, and more
    than S steps when T % S != 0); "quad" spaces them quadratically over [0, 0.8 T].
    """
    if num_ddim_timesteps < 1 or num_ddim_timesteps > num_ddpm_timesteps:
        raise ValueError(f"number of sampling steps must be in [1, {num_ddpm_timesteps}], got {num_ddim_timesteps}")
    if ddim_discr_method == "uniform":
        c = num_ddpm_timesteps // num_ddim_timesteps
        ddim_timesteps = np.asarray(list(range(0, num_ddpm_timesteps, c)))
    elif ddim_discr_method == "quad":
        ddim_timesteps = ((np.linspace(0, np.sqrt(num_ddpm_timesteps * 0.8), num_ddim_timesteps)) ** 2).astype(int)
    else:
        raise ValueError(f"unknown DDIM discretization '{ddim_discr_method}'; expected 'uniform' or 'quad'")
    steps_out = ddim_timesteps + 1
    if verbose:
        logger.info("selected timesteps for DDIM sampler: %s", steps_out)
    return steps_out


def make_ddim_sampling_parameters(
    alphacums: torch.Tensor | np.ndarray, ddim_timesteps: np.ndarray, eta: float, verbose: bool = True
):
    """alpha-bar at the DDIM steps, at the previous steps, and the eta-scaled sigmas (DDIM Eq. 16).

    `alphas` keeps the dtype of `alphacums` (float32 for a model's buffer); `alphas_prev` and
    `sigmas` are float64 numpy arrays, as in the original (the last step goes to
    alpha-bar[0], not to 1).
    """
    alphas = alphacums[ddim_timesteps]
    alphas_prev = np.asarray([alphacums[0]] + alphacums[ddim_timesteps[:-1]].tolist(), dtype=np.float64)
    sigmas = ddim_sigmas(torch.as_tensor(alphas).cpu(), alphas_prev, eta).numpy()
    if verbose:
        logger.info("DDIM alphas %s; previous %s; sigmas %s (eta %s)", alphas, alphas_prev, sigmas, eta)
    return sigmas, alphas, alphas_prev


def ddim_sigmas(alphas: torch.Tensor, alphas_prev: torch.Tensor | np.ndarray, eta: float) -> torch.Tensor:
    """eta * sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev)) (DDIM Eq. 16), elementwise.

    Rounds like the original, where `a` is a float32 tensor and `a_prev` float64: `1 - a` and
    its reciprocal are float32 (torch divides an array by a tensor as reciprocal-then-multiply),
    the rest float64. The result has the dtype of `a_prev` promoted with float32.
    """
    a = torch.as_tensor(alphas)
    a_prev = torch.as_tensor(alphas_prev).to(a.device)
    ratio = (1 - a).reciprocal() * (1 - a_prev)
    return eta * torch.sqrt(ratio * (1 - a / a_prev))


def betas_for_alpha_bar(num_diffusion_timesteps: int, alpha_bar: Callable[[float], float],
                        max_beta: float = 0.999) -> np.ndarray:
    """Discretize a continuous alpha-bar(t), t in [0, 1], into betas."""
    betas = []
    for i in range(num_diffusion_timesteps):
        t1 = i / num_diffusion_timesteps
        t2 = (i + 1) / num_diffusion_timesteps
        betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return np.array(betas)


def extract_into_tensor(a: torch.Tensor, t: torch.Tensor, x_shape: Sequence[int]) -> torch.Tensor:
    """`a[t]` reshaped to [B, 1, 1, ...] so that it broadcasts against a tensor of `x_shape`."""
    b = t.shape[0]
    out = a.gather(-1, t)
    return out.reshape(b, *((1,) * (len(x_shape) - 1)))


def noise_like(shape: Sequence[int], device: torch.device | str, repeat: bool = False,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal noise of `shape`; with `repeat`, one draw shared across the batch."""
    if repeat:
        first = torch.randn((1, *shape[1:]), device=device, dtype=dtype)
        return first.repeat(shape[0], *((1,) * (len(shape) - 1)))
    return torch.randn(shape, device=device, dtype=dtype)


# ---- timestep embedding -----------------------------------------------------------------------

def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000,
                       repeat_only: bool = False) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of (possibly fractional) timesteps: `cat([cos, sin])`.

    Frequencies `exp(-ln(max_period) * i / half)`, i < half = dim // 2, in float32; a zero
    column is appended for odd `dim` (as in the original UNet).
    """
    if repeat_only:
        return repeat(timesteps, "b -> b d", d=dim)
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half
    ).to(device=timesteps.device)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


# ---- layers -----------------------------------------------------------------------------------

def checkpoint(func: Callable, inputs: Sequence, params: Iterable, flag: bool):
    """Run `func(*inputs)`, recomputing it in backward when `flag` (gradient checkpointing).

    Uses torch's non-reentrant checkpoint, so it works with parameters that are not inputs and
    under autocast. `params` is accepted for the original's signature and not needed.
    """
    if flag and torch.is_grad_enabled():
        return torch_checkpoint(func, *inputs, use_reentrant=False)
    return func(*inputs)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero the parameters of `module` in place and return it (output layers start at zero)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def scale_module(module: nn.Module, scale: float) -> nn.Module:
    """Scale the parameters of `module` in place and return it."""
    for p in module.parameters():
        p.detach().mul_(scale)
    return module


def mean_flat(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over all non-batch dimensions."""
    return tensor.mean(dim=list(range(1, len(tensor.shape))))


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back (stable under fp16/bf16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> nn.Module:
    """The UNet's normalization layer: GroupNorm32 with 32 groups, eps 1e-5."""
    if channels % 32:
        raise ValueError(f"GroupNorm with 32 groups needs a channel count divisible by 32, got {channels}")
    return GroupNorm32(32, channels)


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """A 1-D, 2-D or 3-D convolution."""
    if dims == 1:
        return nn.Conv1d(*args, **kwargs)
    if dims == 2:
        return nn.Conv2d(*args, **kwargs)
    if dims == 3:
        return nn.Conv3d(*args, **kwargs)
    raise ValueError(f"unsupported dimensions: {dims}")


def linear(*args, **kwargs) -> nn.Module:
    """A linear layer (kept for the original's API)."""
    return nn.Linear(*args, **kwargs)


def avg_pool_nd(dims: int, *args, **kwargs) -> nn.Module:
    """A 1-D, 2-D or 3-D average pooling."""
    if dims == 1:
        return nn.AvgPool1d(*args, **kwargs)
    if dims == 2:
        return nn.AvgPool2d(*args, **kwargs)
    if dims == 3:
        return nn.AvgPool3d(*args, **kwargs)
    raise ValueError(f"unsupported dimensions: {dims}")


SiLU = nn.SiLU
