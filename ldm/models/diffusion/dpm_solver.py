"""DPM-Solver++(2M): multistep second-order solver of the diffusion ODE in data prediction
(Lu et al., "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
2022, Algorithm 2), as the Stable Diffusion tree's `DPMSolverSampler` runs it.

The discrete schedule is made continuous on t in (0, 1] (Lu et al. 2022a, "DPM-Solver",
Appendix D): knot n sits at t = (n + 1) / N with log alpha = 0.5 log(alpha_bar_n), and
log alpha(t) is piecewise linear between knots. The network is called at the fractional
timestep `(t - 1/N) * 1000`. Steps are uniform in t from 1 to 1/N; step 1 is first order,
the rest second order, and with fewer than 15 steps the last step is first order again.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from ldm.models.diffusion.guidance import SampleCall, Sampler, initial_latent, model_device

logger = logging.getLogger(__name__)

SKIP_TYPES = ("time_uniform", "logSNR", "time_quadratic")


def interpolate_piecewise_linear(x: torch.Tensor, xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
    """y(x) on the polyline through (xp, yp) (xp ascending), extended linearly past both ends.

    A point equal to a knot uses the segment that ends at that knot (as the original's
    sort-based `interpolate_fn` does), so results agree with it to the last bit.
    """
    k = torch.searchsorted(xp, x.contiguous(), right=False)  # knots strictly below x
    start = (k - 1).clamp(0, xp.shape[0] - 2)
    x0, x1, y0, y1 = xp[start], xp[start + 1], yp[start], yp[start + 1]
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


class NoiseScheduleVP:
    """The continuous-time view of a discrete VP schedule (`alpha_bar` given per step).

    Args:
        schedule: only 'discrete' (the other schedules of the DPM-Solver paper are not used by
            any LDM config).
        betas: per-step betas; alternatively `alphas_cumprod`.
        alphas_cumprod: per-step alpha-bar (float32 in the original sampler).
    """

    def __init__(self, schedule: str = "discrete", betas: torch.Tensor | None = None,
                 alphas_cumprod: torch.Tensor | None = None) -> None:
        if schedule != "discrete":
            raise ValueError(f"unsupported noise schedule '{schedule}'; only 'discrete' is implemented")
        self.schedule = schedule
        if betas is not None:
            log_alphas = 0.5 * torch.log(1 - betas).cumsum(dim=0)
        elif alphas_cumprod is not None:
            log_alphas = 0.5 * torch.log(alphas_cumprod)
        else:
            raise ValueError("NoiseScheduleVP needs betas or alphas_cumprod")
        self.total_N = len(log_alphas)
        self.T = 1.0
        self.t_array = torch.linspace(0.0, 1.0, self.total_N + 1)[1:].to(log_alphas.device)
        self.log_alpha_array = log_alphas

    def marginal_log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """log alpha_t."""
        t_array, log_alphas = self.t_array.to(t.device), self.log_alpha_array.to(t.device)
        return interpolate_piecewise_linear(t.reshape(-1), t_array, log_alphas)

    def marginal_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1.0 - torch.exp(2.0 * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t: torch.Tensor) -> torch.Tensor:
        """Half log-SNR lambda_t = log alpha_t - log sigma_t."""
        log_mean_coeff = self.marginal_log_mean_coeff(t)
        log_std = 0.5 * torch.log(1.0 - torch.exp(2.0 * log_mean_coeff))
        return log_mean_coeff - log_std

    def inverse_lambda(self, lamb: torch.Tensor) -> torch.Tensor:
        """The t with lambda_t = `lamb`."""
        log_alpha = -0.5 * torch.logaddexp(torch.zeros((1,)).to(lamb), -2.0 * lamb)
        t_array, log_alphas = self.t_array.to(lamb.device), self.log_alpha_array.to(lamb.device)
        return interpolate_piecewise_linear(log_alpha.reshape(-1), torch.flip(log_alphas, [0]),
                                            torch.flip(t_array, [0]))

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """The (fractional) DDPM timestep the network sees at continuous time t."""
        return (t - 1.0 / self.total_N) * 1000.0


def time_steps(ns: NoiseScheduleVP, skip_type: str, t_T: float, t_0: float, N: int,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """N + 1 decreasing times from t_T to t_0 (uniform in t, in log-SNR, or quadratic in t)."""
    if skip_type == "logSNR":
        lambda_T = ns.marginal_lambda(torch.tensor(t_T, device=device))
        lambda_0 = ns.marginal_lambda(torch.tensor(t_0, device=device))
        log_snr = torch.linspace(lambda_T.cpu().item(), lambda_0.cpu().item(), N + 1).to(device)
        return ns.inverse_lambda(log_snr)
    if skip_type == "time_uniform":
        return torch.linspace(t_T, t_0, N + 1).to(device)
    if skip_type == "time_quadratic":
        return torch.linspace(t_T**0.5, t_0**0.5, N + 1).pow(2).to(device)
    raise ValueError(f"unknown skip_type '{skip_type}'; expected one of {SKIP_TYPES}")


def _expand(v: torch.Tensor, dims: int) -> torch.Tensor:
    return v[(...,) + (None,) * (dims - 1)]


def dpmpp_first_order_update(x: torch.Tensor, x0_s: torch.Tensor, lambda_s: torch.Tensor,
                             lambda_t: torch.Tensor, sigma_s: torch.Tensor, sigma_t: torch.Tensor,
                             alpha_t: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(1) from s to t (= DDIM): x_t = sigma_t/sigma_s x - alpha_t expm1(-h) x0_s."""
    h = lambda_t - lambda_s
    phi_1 = torch.expm1(-h)
    return _expand(sigma_t / sigma_s, x.dim()) * x - _expand(alpha_t * phi_1, x.dim()) * x0_s


def dpmpp_2m_update(x: torch.Tensor, x0_prev_1: torch.Tensor, x0_prev_0: torch.Tensor,
                    lambda_prev_1: torch.Tensor, lambda_prev_0: torch.Tensor, lambda_t: torch.Tensor,
                    sigma_prev_0: torch.Tensor, sigma_t: torch.Tensor, alpha_t: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2M) step from t_prev_0 to t using x0 at t_prev_1 (older) and t_prev_0."""
    dims = x.dim()
    h_0 = lambda_prev_0 - lambda_prev_1
    h = lambda_t - lambda_prev_0
    r0 = h_0 / h
    d1 = _expand(1.0 / r0, dims) * (x0_prev_0 - x0_prev_1)
    coef = _expand(alpha_t * (torch.exp(-h) - 1.0), dims)
    return _expand(sigma_t / sigma_prev_0, dims) * x - coef * x0_prev_0 - 0.5 * coef * d1


def multistep_order(step: int, steps: int, lower_order_final: bool = True) -> int:
    """Order of step `step` (1-based) of DPM-Solver++(2M) with `steps` steps."""
    if step == 1:
        return 1
    if lower_order_final and steps < 15:
        return min(2, steps + 1 - step)
    return 2


def sample_dpmpp_2m(x0_fn: Callable, x: torch.Tensor, timesteps: torch.Tensor, ns: NoiseScheduleVP,
                    lower_order_final: bool = True, callback: Callable | None = None,
                    disable: bool = True) -> torch.Tensor:
    """Run DPM-Solver++(2M) over `timesteps` (decreasing continuous times); NFE = len - 1.

    `x0_fn(x, t)` returns the data prediction at per-sample times t [B]; `callback(i, x, x0)`
    is called after each step with the last data prediction.
    """
    steps = timesteps.shape[0] - 1
    b = x.shape[0]
    t_prev = [timesteps[0].expand(b)]
    x0_prev = [x0_fn(x, t_prev[0])]
    for step in tqdm(range(1, steps + 1), desc="DPM-Solver++ Sampler", total=steps, disable=disable):
        t = timesteps[step].expand(b)
        lambda_t, sigma_t, alpha_t = ns.marginal_lambda(t), ns.marginal_std(t), ns.marginal_alpha(t)
        if multistep_order(step, steps, lower_order_final) == 1:
            s = t_prev[-1]
            x = dpmpp_first_order_update(x, x0_prev[-1], ns.marginal_lambda(s), lambda_t,
                                         ns.marginal_std(s), sigma_t, alpha_t)
        else:
            t1, t0 = t_prev[-2], t_prev[-1]
            x = dpmpp_2m_update(x, x0_prev[-2], x0_prev[-1], ns.marginal_lambda(t1),
                                ns.marginal_lambda(t0), lambda_t, ns.marginal_std(t0), sigma_t, alpha_t)
        t_prev = (t_prev + [t])[-2:]
        if step < steps:  # no model call at the final time
            x0_prev = (x0_prev + [x0_fn(x, t)])[-2:]
        if callback is not None:
            callback(step - 1, x, x0_prev[-1])
    return x


class DPMSolverSampler(Sampler):
    """DPM-Solver++(2M) with the `sample(...)` interface of the DDIM sampler.

    Args:
        model: a LatentDiffusion-like object (`apply_model`, `alphas_cumprod`, `betas`,
            `parameterization` 'eps' or 'v' or 'x0').
    """

    def __init__(self, model: Any, **kwargs: Any) -> None:
        self.model = model
        self.alphas_cumprod = model.alphas_cumprod.detach().clone().to(torch.float32).to(model_device(model))

    def _check_mask(self, mask: torch.Tensor | None) -> None:
        if mask is not None:
            raise ValueError("DPM-Solver does not support mask/x0 blending; use DDIM or PLMS")

    def _sample(self, call: SampleCall, skip_type: str = "time_uniform", lower_order_final: bool = True,
                t_end: float | None = None, **kwargs: Any):
        """Sample in `S` model evaluations (`sample(..., skip_type=, lower_order_final=, t_end=)`).

        The original returned `(samples, None)`; here intermediates are
        {'x_inter': [...], 'pred_x0': [...]} as for DDIM. eta, temperature, noise_dropout and
        quantize_x0 do not apply to this deterministic solver (as in the original).
        """
        device = model_device(self.model)
        img = initial_latent(self.model, call.size, call.x_T)
        ns = NoiseScheduleVP("discrete", alphas_cumprod=self.alphas_cumprod)
        guided = call.guided(self.model)

        def x0_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            alpha_t, sigma_t = ns.marginal_alpha(t), ns.marginal_std(t)
            return guided.x0(x, ns.model_time(t), call.conditioning, alpha_t, sigma_t)

        t_0 = 1.0 / ns.total_N if t_end is None else t_end
        timesteps = time_steps(ns, skip_type, ns.T, t_0, call.S, device)
        intermediates = {"x_inter": [img], "pred_x0": [img]}
        on_step = call.step_logger(intermediates)
        samples = sample_dpmpp_2m(x0_fn, img, timesteps, ns, lower_order_final, on_step, disable=not call.verbose)
        return samples.to(device), intermediates
