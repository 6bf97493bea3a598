"""DDIM sampler (Song, Meng & Ermon, "Denoising Diffusion Implicit Models", ICLR 2021).

Reproduces the original `ldm.models.diffusion.ddim.DDIMSampler` (interface and numbers: same
schedule arrays and dtypes, same float32 step arithmetic, one `noise_like` draw per step even
at eta = 0) while running on the model's device and dtype instead of hard-coded CUDA.
`ScheduleSampler` holds the schedule that PLMS shares.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ldm.models.diffusion.guidance import (
    Conditioning,
    GuidedModel,
    SampleCall,
    Sampler,
    initial_latent,
    model_device,
)
from ldm.modules.diffusionmodules.util import (
    extract_into_tensor,
    ddim_sigmas,
    make_ddim_sampling_parameters,
    make_ddim_timesteps,
    noise_like,
)

logger = logging.getLogger(__name__)


def ddim_step(x: torch.Tensor, e_t: torch.Tensor, a_t: torch.Tensor, a_prev: torch.Tensor,
              sigma_t: torch.Tensor, sqrt_one_minus_at: torch.Tensor, noise: torch.Tensor,
              temperature: float = 1.0, noise_dropout: float = 0.0,
              quantize: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update x_t -> x_prev (DDIM Eq. 12); returns (x_prev, pred_x0).

    `a_t`, `a_prev` are alpha-bar at t and at the previous step; `noise` is scaled by sigma_t.
    """
    pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
    if quantize is not None:
        pred_x0 = quantize(pred_x0)
    dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * e_t
    noise = sigma_t * noise * temperature
    if noise_dropout > 0.0:
        noise = torch.nn.functional.dropout(noise, p=noise_dropout)
    x_prev = a_prev.sqrt() * pred_x0 + dir_xt + noise
    return x_prev, pred_x0


class ScheduleSampler(Sampler):
    """The DDIM schedule on a subset of the model's timesteps, and the sampling loop shared by
    DDIM and PLMS (subclasses give the step: `_stepper`).

    Args:
        model: a LatentDiffusion-like object (`apply_model`, `alphas_cumprod`,
            `alphas_cumprod_prev`, `betas`, `num_timesteps`, `parameterization`).
        schedule: kept for the original's signature; unused.
    """

    def __init__(self, model: Any, schedule: str = "linear", **kwargs: Any) -> None:
        self.model = model
        self.ddpm_num_timesteps = model.num_timesteps
        self.schedule = schedule

    def register_buffer(self, name: str, attr: Any) -> None:
        """Set an attribute; tensors move to the model's device (the original forced CUDA)."""
        if isinstance(attr, torch.Tensor) and attr.dtype != torch.float64:
            attr = attr.to(model_device(self.model))
        setattr(self, name, attr)

    def make_schedule(self, ddim_num_steps: int, ddim_discretize: str = "uniform",
                      ddim_eta: float = 0.0, verbose: bool = True) -> None:
        """Select the sampling timesteps and their alpha-bar / sigma arrays.

        Types follow the original: `ddim_timesteps` int64 numpy, `ddim_alphas` float32 tensor,
        `ddim_alphas_prev` float64 numpy, `ddim_sigmas` float64 tensor (kept on the CPU: it is
        only read as scalars), `ddim_sqrt_one_minus_alphas` float32 tensor.
        """
        T = self.ddpm_num_timesteps
        steps = make_ddim_timesteps(ddim_discretize, ddim_num_steps, T, verbose=verbose)
        if steps[-1] >= T:  # S > T/2: 'uniform' reaches t = T, where the original raised IndexError
            steps = steps - 1
        self.ddim_timesteps = steps
        alphas_cumprod = self.model.alphas_cumprod
        if alphas_cumprod.shape[0] != T:
            raise ValueError("alphas have to be defined for each timestep")
        device = model_device(self.model)

        def to_torch(v: Any) -> torch.Tensor:
            return torch.as_tensor(v).clone().detach().to(torch.float32).to(device)

        ac = alphas_cumprod.detach().cpu().float()
        self.register_buffer("betas", to_torch(self.model.betas))
        self.register_buffer("alphas_cumprod", to_torch(ac))
        self.register_buffer("alphas_cumprod_prev", to_torch(self.model.alphas_cumprod_prev))
        self.register_buffer("sqrt_alphas_cumprod", to_torch(ac.sqrt()))
        self.register_buffer("sqrt_one_minus_alphas_cumprod", to_torch((1.0 - ac).sqrt()))
        self.register_buffer("log_one_minus_alphas_cumprod", to_torch((1.0 - ac).log()))
        self.register_buffer("sqrt_recip_alphas_cumprod", to_torch((1.0 / ac).sqrt()))
        self.register_buffer("sqrt_recipm1_alphas_cumprod", to_torch((1.0 / ac - 1).sqrt()))

        _, alphas, alphas_prev = make_ddim_sampling_parameters(ac, steps, ddim_eta, verbose=verbose)
        self.register_buffer("ddim_sigmas", ddim_sigmas(alphas, alphas_prev, ddim_eta))
        self.register_buffer("ddim_alphas", alphas)
        self.register_buffer("ddim_alphas_prev", alphas_prev)
        # numpy's sqrt, as the original: it is correctly rounded, while torch's vectorised float32
        # sqrt is 1 ulp off for some values on some CPUs (AMD EPYC with AVX512).
        self.register_buffer("ddim_sqrt_one_minus_alphas", torch.from_numpy(np.sqrt((1.0 - alphas).cpu().numpy())))
        # As the original defines it (over ddim_timesteps[:-1]); kept for compatibility only.
        ac_prev = self.alphas_cumprod_prev
        self.register_buffer("ddim_sigmas_for_original_num_steps",
                             ddim_sigmas(self.alphas_cumprod[steps[:-1]], ac_prev[steps[:-1]], ddim_eta))
        # Per-timestep sigmas for `use_original_steps` (the original read a missing attribute).
        self.register_buffer("sigmas_for_original_steps", ddim_sigmas(self.alphas_cumprod, ac_prev, ddim_eta))

    def _coefficients(self, index: int, b: int, x: torch.Tensor, use_original_steps: bool):
        """(a_t, a_prev, sigma_t, sqrt(1 - a_t)) at schedule position `index`, as [b,1,1,1] tensors."""
        if use_original_steps:
            values = (self.alphas_cumprod[index], self.alphas_cumprod_prev[index],
                      self.sigmas_for_original_steps[index], self.sqrt_one_minus_alphas_cumprod[index])
        else:
            values = (self.ddim_alphas[index], self.ddim_alphas_prev[index],
                      self.ddim_sigmas[index], self.ddim_sqrt_one_minus_alphas[index])
        shape = (b,) + (1,) * (x.ndim - 1)
        return tuple(torch.full(shape, float(v), device=x.device, dtype=x.dtype) for v in values)

    def _time_range(self, timesteps: Any, use_original_steps: bool) -> np.ndarray:
        """The timesteps to visit, descending (`timesteps` may cut the schedule short)."""
        if timesteps is None:
            timesteps = np.arange(self.ddpm_num_timesteps) if use_original_steps else self.ddim_timesteps
        elif not use_original_steps and np.ndim(timesteps) == 0:
            n = self.ddim_timesteps.shape[0]
            subset_end = int(min(timesteps / n, 1) * n) - 1
            timesteps = self.ddim_timesteps[:subset_end]
        elif np.ndim(timesteps) == 0:
            timesteps = np.arange(int(timesteps))
        return np.flip(np.asarray(timesteps))

    def _initial(self, shape: tuple, x_T: torch.Tensor | None) -> torch.Tensor:
        return initial_latent(self.model, shape, x_T)

    def _guided(self, unconditional_guidance_scale: float, unconditional_conditioning: Conditioning,
                score_corrector: Any = None, corrector_kwargs: dict | None = None) -> GuidedModel:
        return GuidedModel(self.model, unconditional_guidance_scale, unconditional_conditioning,
                           score_corrector, corrector_kwargs)

    def _quantizer(self, quantize_denoised: bool) -> Callable | None:
        if not quantize_denoised:
            return None
        return lambda z: self.model.first_stage_model.quantize(z)[0]

    name = "DDIM"  # in the progress bar and the log

    def _sample(self, call: SampleCall, **kwargs: Any):
        self.make_schedule(ddim_num_steps=call.S, ddim_eta=call.eta, verbose=call.verbose)
        logger.debug("data shape for %s sampling is %s, eta %s", self.name, call.size, call.eta)
        return self.sampling_loop(
            call.conditioning, call.size, callback=call.callback, img_callback=call.img_callback,
            quantize_denoised=call.quantize_x0, mask=call.mask, x0=call.x0, ddim_use_original_steps=False,
            noise_dropout=call.noise_dropout, temperature=call.temperature,
            score_corrector=call.score_corrector, corrector_kwargs=call.corrector_kwargs, x_T=call.x_T,
            log_every_t=call.log_every_t, unconditional_guidance_scale=call.unconditional_guidance_scale,
            unconditional_conditioning=call.unconditional_conditioning, verbose=call.verbose,
        )

    def _stepper(self, guided: GuidedModel, cond: Conditioning, time_range: np.ndarray,
                 use_original_steps: bool, quantize_denoised: bool, temperature: float,
                 noise_dropout: float) -> Callable:
        """`step(i, x, ts, index) -> (x_prev, pred_x0)` for one pass over `time_range`."""
        raise NotImplementedError

    @torch.no_grad()
    def sampling_loop(self, cond: Conditioning, shape: tuple, x_T: torch.Tensor | None = None,
                      ddim_use_original_steps: bool = False, callback: Callable | None = None,
                      timesteps: Any = None, quantize_denoised: bool = False,
                      mask: torch.Tensor | None = None, x0: torch.Tensor | None = None,
                      img_callback: Callable | None = None, log_every_t: int = 100,
                      temperature: float = 1.0, noise_dropout: float = 0.0,
                      score_corrector: Any = None, corrector_kwargs: dict | None = None,
                      unconditional_guidance_scale: float = 1.0,
                      unconditional_conditioning: Conditioning = None, verbose: bool = True):
        """The sampling loop from `x_T` (or fresh noise); `mask`/`x0` keep known regions (mask = 1)."""
        img = self._initial(shape, x_T)
        b = shape[0]
        guided = self._guided(unconditional_guidance_scale, unconditional_conditioning,
                              score_corrector, corrector_kwargs)
        time_range = self._time_range(timesteps, ddim_use_original_steps)
        total_steps = time_range.shape[0]
        step_fn = self._stepper(guided, cond, time_range, ddim_use_original_steps, quantize_denoised,
                                temperature, noise_dropout)
        intermediates = {"x_inter": [img], "pred_x0": [img]}
        iterator = tqdm(time_range, desc=f"{self.name} Sampler", total=total_steps, disable=not verbose)
        for i, step in enumerate(iterator):
            index = total_steps - i - 1
            ts = torch.full((b,), int(step), device=img.device, dtype=torch.long)
            if mask is not None:
                if x0 is None:
                    raise ValueError("mask needs x0 (the latent whose masked region is kept)")
                img_orig = self.model.q_sample(x0, ts)
                img = img_orig * mask + (1.0 - mask) * img
            img, pred_x0 = step_fn(i, img, ts, index)
            if callback:
                callback(i)
            if img_callback:
                img_callback(pred_x0, i)
            if index % log_every_t == 0 or index == total_steps - 1:
                intermediates["x_inter"].append(img)
                intermediates["pred_x0"].append(pred_x0)
        return img, intermediates


class DDIMSampler(ScheduleSampler):
    """DDIM sampling, img2img encoding (`stochastic_encode`) and decoding (`decode`)."""

    ddim_sampling = ScheduleSampler.sampling_loop  # the original name of the loop

    def _stepper(self, guided: GuidedModel, cond: Conditioning, time_range: np.ndarray,
                 use_original_steps: bool, quantize_denoised: bool, temperature: float,
                 noise_dropout: float) -> Callable:
        def step(i: int, x: torch.Tensor, ts: torch.Tensor, index: int):
            return self._p_sample(guided, x, cond, ts, index, use_original_steps, quantize_denoised,
                                  temperature, noise_dropout)
        return step

    def _p_sample(self, guided: GuidedModel, x: torch.Tensor, c: Conditioning, t: torch.Tensor,
                  index: int, use_original_steps: bool = False, quantize_denoised: bool = False,
                  temperature: float = 1.0, noise_dropout: float = 0.0, repeat_noise: bool = False):
        e_t = guided.eps(x, t, c)
        coefs = self._coefficients(index, x.shape[0], x, use_original_steps)
        noise = noise_like(x.shape, x.device, repeat_noise, dtype=x.dtype)
        return ddim_step(x, e_t, *coefs, noise, temperature, noise_dropout,
                         self._quantizer(quantize_denoised))

    @torch.no_grad()
    def p_sample_ddim(self, x: torch.Tensor, c: Conditioning, t: torch.Tensor, index: int,
                      repeat_noise: bool = False, use_original_steps: bool = False,
                      quantize_denoised: bool = False, temperature: float = 1.0,
                      noise_dropout: float = 0.0, score_corrector: Any = None,
                      corrector_kwargs: dict | None = None, unconditional_guidance_scale: float = 1.0,
                      unconditional_conditioning: Conditioning = None):
        """One guided DDIM step at timestep `t` (schedule position `index`): (x_prev, pred_x0)."""
        guided = self._guided(unconditional_guidance_scale, unconditional_conditioning,
                              score_corrector, corrector_kwargs)
        return self._p_sample(guided, x, c, t, index, use_original_steps, quantize_denoised,
                              temperature, noise_dropout, repeat_noise)

    @torch.no_grad()
    def stochastic_encode(self, x0: torch.Tensor, t: torch.Tensor, use_original_steps: bool = False,
                          noise: torch.Tensor | None = None) -> torch.Tensor:
        """q(x_t | x0) at schedule position `t` (an index into the DDIM steps), for img2img."""
        if use_original_steps:
            sqrt_ac, sqrt_one_minus_ac = self.sqrt_alphas_cumprod, self.sqrt_one_minus_alphas_cumprod
        else:
            sqrt_ac, sqrt_one_minus_ac = torch.sqrt(self.ddim_alphas), self.ddim_sqrt_one_minus_alphas
        if noise is None:
            noise = torch.randn_like(x0)
        t = t.to(sqrt_ac.device)
        return (extract_into_tensor(sqrt_ac, t, x0.shape).to(x0) * x0
                + extract_into_tensor(sqrt_one_minus_ac, t, x0.shape).to(x0) * noise)

    @torch.no_grad()
    def decode(self, x_latent: torch.Tensor, cond: Conditioning, t_start: int,
               unconditional_guidance_scale: float = 1.0, unconditional_conditioning: Conditioning = None,
               use_original_steps: bool = False, verbose: bool = True,
               callback: Callable | None = None) -> torch.Tensor:
        """Run the last `t_start` DDIM steps from `x_latent` (img2img after `stochastic_encode`)."""
        timesteps = np.arange(self.ddpm_num_timesteps) if use_original_steps else self.ddim_timesteps
        time_range = np.flip(timesteps[:t_start])
        total_steps = time_range.shape[0]
        guided = self._guided(unconditional_guidance_scale, unconditional_conditioning)
        x_dec = x_latent
        for i, step in enumerate(tqdm(time_range, desc="Decoding image", total=total_steps, disable=not verbose)):
            index = total_steps - i - 1
            ts = torch.full((x_latent.shape[0],), int(step), device=x_latent.device, dtype=torch.long)
            x_dec, _ = self._p_sample(guided, x_dec, cond, ts, index, use_original_steps)
            if callback:
                callback(i)
        return x_dec
