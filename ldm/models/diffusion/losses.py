"""Training losses of the diffusion models: targets, per-sample losses and their weighting.

The combination follows the original `LatentDiffusion.p_losses` exactly (reference README,
fact 18); min-SNR-gamma weighting and offset noise are additions, off by default.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ldm.modules.diffusionmodules.util import extract_into_tensor

LOSS_TYPES = ("l1", "l2")


def elementwise_loss(pred: Tensor, target: Tensor, loss_type: str) -> Tensor:
    """|target - pred| for "l1", (target - pred)^2 for "l2", no reduction."""
    if loss_type == "l1":
        return (target - pred).abs()
    if loss_type == "l2":
        return torch.nn.functional.mse_loss(target, pred, reduction="none")
    raise ValueError(f"unknown loss type '{loss_type}'; expected one of {LOSS_TYPES}")


def per_sample_loss(pred: Tensor, target: Tensor, loss_type: str) -> Tensor:
    """The elementwise loss averaged over every non-batch dimension: shape [B]."""
    loss = elementwise_loss(pred, target, loss_type)
    return loss.mean(dim=list(range(1, loss.ndim)))


def diffusion_target(parameterization: str, x_start: Tensor, noise: Tensor, t: Tensor,
                     sqrt_alphas_cumprod: Tensor, sqrt_one_minus_alphas_cumprod: Tensor) -> Tensor:
    """What the network learns to predict: the noise (eps), the clean input (x0), or
    v = sqrt(abar) * noise - sqrt(1 - abar) * x0 (Salimans & Ho 2022, Sec. 4)."""
    if parameterization == "eps":
        return noise
    if parameterization == "x0":
        return x_start
    if parameterization == "v":
        return (extract_into_tensor(sqrt_alphas_cumprod, t, x_start.shape) * noise
                - extract_into_tensor(sqrt_one_minus_alphas_cumprod, t, x_start.shape) * x_start)
    raise ValueError(f"unknown parameterization '{parameterization}'; expected 'eps', 'x0' or 'v'")


def min_snr_weights(alphas_cumprod: Tensor, t: Tensor, gamma: float, parameterization: str,
                    offset: float = 0.0) -> Tensor:
    """Min-SNR-gamma loss weights [B] (Hang et al. 2023, "Efficient Diffusion Training via
    Min-SNR Weighting Strategy", Eq. 9 and its eps / v forms).

    Every objective is an x0 error times a factor (eps: SNR, v: SNR + 1); the weights rescale it
    so that the x0 error is weighted by w = min(SNR + offset, gamma). offset = 0 is the paper;
    offset = 1 clips Salimans & Ho's "SNR + 1" weighting (the plain v loss) and keeps a weight
    of at least 1 at high noise, where the paper's weight (SNR -> 0) stops training the layout
    that a sample will have. The returned factor is w for x0, w / SNR for eps (at SNR = 0, a
    zero-terminal-SNR step, the paper's limit 1) and w / (SNR + 1) for v.
    """
    if gamma <= 0:
        raise ValueError(f"min_snr_gamma must be positive, got {gamma}")
    if offset < 0:
        raise ValueError(f"min_snr_offset must be non-negative, got {offset}")
    ac = alphas_cumprod.to(t.device)[t].double()
    snr = ac / (1.0 - ac)
    clipped = torch.clamp(snr + offset, max=gamma)
    if parameterization == "x0":
        weights = clipped
    elif parameterization == "eps":
        if offset > 0 and bool((snr == 0).any()):
            raise ValueError("min_snr_offset > 0 needs x0 to be recoverable from eps, which it is not "
                             "at a zero-SNR step; use parameterization 'v'")
        weights = torch.where(snr > 0, clipped / snr.clamp(min=1e-30), torch.ones_like(snr))
    elif parameterization == "v":
        weights = clipped / (snr + 1.0)
    else:
        raise ValueError(f"unknown parameterization '{parameterization}'")
    return weights.float()


def min_snr_offset_at(step: int, offset: float, steps: int | None) -> float:
    """The `min_snr_weights` offset in effect at training step `step`: `offset` during the first
    `steps` steps (all of training when `steps` is None), 0 from then on.

    A coarse-to-fine curriculum: the offset weights the high-noise steps, where a sample's layout
    is decided; the paper's weighting afterwards gives the training back to the lower-noise
    steps that draw the details (docs/quickstart.md measures it).
    """
    if steps is not None and step >= steps:
        return 0.0
    return offset


def offset_noise(x: Tensor, strength: float, generator: torch.Generator | None = None) -> Tensor:
    """Gaussian noise for `x` plus `strength` times a per-sample, per-channel constant
    (Guttenberg 2023, "Diffusion with Offset Noise"): lets the model change the mean brightness."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if strength:
        offset = torch.randn((x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2), generator=generator,
                             device=x.device, dtype=x.dtype)
        noise = noise + strength * offset
    return noise


def combine_losses(
    loss_simple: Tensor,
    t: Tensor,
    *,
    logvar: Tensor,
    lvlb_weights: Tensor,
    l_simple_weight: float,
    original_elbo_weight: float,
    learn_logvar: bool,
    prefix: str,
    sample_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The total loss and the logged values, as the original `LatentDiffusion.p_losses`.

    `loss = l_simple_weight * mean(w * loss_simple / exp(logvar[t]) + logvar[t])
    + original_elbo_weight * mean(lvlb_weights[t] * loss_simple)`, with w the optional
    `sample_weights` (min-SNR). Logged keys: `{prefix}/loss_simple` (unweighted),
    `{prefix}/loss_gamma` and `logvar` when the log-variance is learned, `{prefix}/loss_vlb`,
    `{prefix}/loss`.
    """
    loss_dict: dict[str, Tensor] = {f"{prefix}/loss_simple": loss_simple.mean()}
    logvar_t = logvar[t.to(logvar.device)].to(loss_simple.device)
    weighted = loss_simple if sample_weights is None else loss_simple * sample_weights
    loss = weighted / torch.exp(logvar_t) + logvar_t
    if learn_logvar:
        loss_dict[f"{prefix}/loss_gamma"] = loss.mean()
        loss_dict["logvar"] = logvar.data.mean()
    loss = l_simple_weight * loss.mean()
    loss_vlb = (lvlb_weights[t] * loss_simple).mean()
    loss_dict[f"{prefix}/loss_vlb"] = loss_vlb
    loss = loss + original_elbo_weight * loss_vlb
    loss_dict[f"{prefix}/loss"] = loss
    return loss, loss_dict
