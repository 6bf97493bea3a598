"""Diagonal Gaussian posterior of the KL autoencoder, and the Gaussian KL helper of DDPM."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


class DiagonalGaussianDistribution:
    """N(mean, diag(exp(logvar))) from `parameters` = cat([mean, logvar], dim=1).

    `logvar` is clamped to [-30, 20]. With `deterministic=True` the variance is zero, `sample()`
    returns the mean and `kl()` / `nll()` are 0.

    Args:
        parameters: [B, 2C, ...] moments (the output of the encoder's `quant_conv`).
        deterministic: treat the distribution as a point mass at the mean.
    """

    def __init__(self, parameters: Tensor, deterministic: bool = False):
        self.parameters = parameters
        self.mean, self.logvar = torch.chunk(parameters, 2, dim=1)
        self.logvar = torch.clamp(self.logvar, LOGVAR_MIN, LOGVAR_MAX)
        self.deterministic = deterministic
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)
        if deterministic:
            self.var = self.std = torch.zeros_like(self.mean)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """mean + std * eps. eps is drawn on the CPU generator and then moved, as the original
        does, so that `torch.manual_seed(s)` gives the same sample on every device."""
        noise = torch.randn(self.mean.shape, generator=generator)
        return self.mean + self.std * noise.to(device=self.mean.device, dtype=self.mean.dtype)

    def kl(self, other: DiagonalGaussianDistribution | None = None) -> Tensor:
        """KL(self || other) summed over C, H, W (other defaults to N(0, I)); shape [B]."""
        if self.deterministic:
            return torch.zeros(1, device=self.mean.device)
        dims = [1, 2, 3]
        if other is None:
            return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=dims)
        return 0.5 * torch.sum(
            (self.mean - other.mean).pow(2) / other.var + self.var / other.var - 1.0
            - self.logvar + other.logvar, dim=dims)

    def nll(self, sample: Tensor, dims: Sequence[int] = (1, 2, 3)) -> Tensor:
        """Negative log-likelihood of `sample`, summed over `dims`."""
        if self.deterministic:
            return torch.zeros(1, device=self.mean.device)
        log_two_pi = math.log(2.0 * math.pi)
        return 0.5 * torch.sum(log_two_pi + self.logvar + (sample - self.mean).pow(2) / self.var,
                               dim=list(dims))

    def mode(self) -> Tensor:
        """The mean (the mode of a Gaussian)."""
        return self.mean


def normal_kl(mean1: Tensor | float, logvar1: Tensor | float,
              mean2: Tensor | float, logvar2: Tensor | float) -> Tensor:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))); scalars broadcast."""
    tensor = next((x for x in (mean1, logvar1, mean2, logvar2) if isinstance(x, Tensor)), None)
    if tensor is None:
        raise TypeError("normal_kl: at least one argument must be a tensor")
    logvar1, logvar2 = (x if isinstance(x, Tensor) else torch.tensor(x).to(tensor) for x in (logvar1, logvar2))
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))
