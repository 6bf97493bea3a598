"""Classifier-free guidance and the model adapter that every sampler shares.

Two small pieces, used by DDIM, PLMS, DPM-Solver++ and the k-diffusion style samplers:

* **Guidance** (Ho & Salimans, "Classifier-Free Diffusion Guidance", 2022, Eq. 6): the
  unconditional and the conditional prediction come from ONE forward pass over the doubled
  batch `[uncond, cond]` (unconditional rows first, as the original samplers order them), and
  are combined as `out_u + s * (out_c - out_u)`. Conditionings may be tensors (cross-attention
  context, class labels), lists of tensors (concat / cross-attention lists as LatentDiffusion
  wraps them) or SD-style dicts `{'c_concat': [...], 'c_crossattn': [...]}` (hybrid).
* **Parameterization** (eps / x0 / v; Salimans & Ho 2022, Sec. 4 for v): converts the raw
  network output into the noise prediction eps and the data prediction x0 at noise level
  `alpha_t = sqrt(alpha_bar_t)`, `sigma_t = sqrt(1 - alpha_bar_t)`. For eps models eps is the
  output itself (no arithmetic), so the original samplers are reproduced bit for bit.

Guidance is applied to the raw output: the conversions are affine in the output with
coefficients shared by both halves of the batch, so guiding the raw output equals guiding eps.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)

Conditioning = torch.Tensor | list | tuple | dict | None
PARAMETERIZATIONS = ("eps", "x0", "v")


# ---- classifier-free guidance ------------------------------------------------------------------

def concat_conditioning(uncond: Conditioning, cond: Conditioning) -> Conditioning:
    """Batch `uncond` and `cond` along dim 0 (uncond first), recursing into lists and dicts."""
    if isinstance(cond, dict):
        if not isinstance(uncond, dict) or set(uncond) != set(cond):
            raise ValueError(
                "unconditional_conditioning must be a dict with the same keys as the conditioning "
                f"({sorted(cond)}), got {sorted(uncond) if isinstance(uncond, dict) else type(uncond).__name__}"
            )
        return {k: concat_conditioning(uncond[k], cond[k]) for k in cond}
    if isinstance(cond, (list, tuple)):
        if not isinstance(uncond, (list, tuple)) or len(uncond) != len(cond):
            raise ValueError("unconditional_conditioning must be a list as long as the conditioning")
        return [concat_conditioning(u, c) for u, c in zip(uncond, cond, strict=True)]
    if cond is None and uncond is None:
        return None
    if not isinstance(cond, torch.Tensor) or not isinstance(uncond, torch.Tensor):
        raise TypeError(
            f"cannot batch conditionings of types {type(uncond).__name__} and {type(cond).__name__}"
        )
    return torch.cat([uncond, cond])


def combine_guidance(out_uncond: torch.Tensor, out_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """`out_u + s * (out_c - out_u)` (Ho & Salimans 2022, Eq. 6 with w = s - 1)."""
    return out_uncond + scale * (out_cond - out_uncond)


def uses_guidance(unconditional_conditioning: Conditioning, scale: float) -> bool:
    """Guidance needs an unconditional conditioning and a scale other than 1."""
    return unconditional_conditioning is not None and scale != 1.0


def guided_output(apply_model: Callable, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                  unconditional_conditioning: Conditioning = None, scale: float = 1.0) -> torch.Tensor:
    """The (guided) raw model output at `(x, t)`: one call, on a doubled batch when guiding."""
    if not uses_guidance(unconditional_conditioning, scale):
        return apply_model(x, t, cond)
    x_in = torch.cat([x] * 2)
    t_in = torch.cat([t] * 2)
    c_in = concat_conditioning(unconditional_conditioning, cond)
    out_uncond, out_cond = apply_model(x_in, t_in, c_in).chunk(2)
    return combine_guidance(out_uncond, out_cond, scale)


# ---- parameterization ----------------------------------------------------------------------------

def eps_from_output(parameterization: str, out: torch.Tensor, x: torch.Tensor,
                    alpha_t: torch.Tensor | None, sigma_t: torch.Tensor | None) -> torch.Tensor:
    """Noise prediction from a raw output; `x = alpha_t * x0 + sigma_t * eps`."""
    if parameterization == "eps":
        return out
    if parameterization == "x0":
        return (x - alpha_t * out) / sigma_t
    if parameterization == "v":  # v = alpha eps - sigma x0  =>  eps = alpha v + sigma x
        return alpha_t * out + sigma_t * x
    raise ValueError(f"unknown parameterization '{parameterization}'; expected one of {PARAMETERIZATIONS}")


def x0_from_output(parameterization: str, out: torch.Tensor, x: torch.Tensor,
                   alpha_t: torch.Tensor, sigma_t: torch.Tensor) -> torch.Tensor:
    """Data prediction from a raw output; `x = alpha_t * x0 + sigma_t * eps`."""
    if parameterization == "eps":
        return (x - sigma_t * out) / alpha_t
    if parameterization == "x0":
        return out
    if parameterization == "v":  # x0 = alpha x - sigma v
        return alpha_t * x - sigma_t * out
    raise ValueError(f"unknown parameterization '{parameterization}'; expected one of {PARAMETERIZATIONS}")


def _broadcast(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample [B] (or scalar) coefficient reshaped to broadcast against `x`."""
    coef = torch.as_tensor(coef, device=x.device)
    if coef.ndim == 0:
        return coef.to(x.dtype)
    return coef.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


class GuidedModel:
    """A diffusion model seen by a sampler: guided eps / x0 predictions at any timestep.

    Args:
        model: a LatentDiffusion-like object with `apply_model(x, t, cond)`,
            `alphas_cumprod` and `parameterization` ('eps', 'x0' or 'v').
        unconditional_guidance_scale: the guidance scale s (1 disables guidance).
        unconditional_conditioning: the conditioning of the unconditional half, same structure
            as the conditioning (tensor, list or dict).
        score_corrector: optional object with `modify_score(model, eps, x, t, c, **kwargs)`
            (the original's hook, eps models only).
        corrector_kwargs: keyword arguments for `score_corrector.modify_score`.
    """

    def __init__(self, model: Any, unconditional_guidance_scale: float = 1.0,
                 unconditional_conditioning: Conditioning = None, score_corrector: Any = None,
                 corrector_kwargs: dict | None = None) -> None:
        self.model = model
        self.scale = float(unconditional_guidance_scale)
        self.uncond = unconditional_conditioning
        self.parameterization = getattr(model, "parameterization", "eps")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unsupported parameterization '{self.parameterization}'")
        if score_corrector is not None and self.parameterization != "eps":
            raise ValueError("score_corrector needs an eps-parameterized model")
        self.score_corrector = score_corrector
        self.corrector_kwargs = corrector_kwargs or {}

    def output(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The guided raw network output."""
        return guided_output(self.model.apply_model, x, t, cond, self.uncond, self.scale)

    def _alpha_sigma(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t) at integer timesteps `t`, shaped for `x`."""
        a = self.model.alphas_cumprod.to(x.device)[t.long()]
        return _broadcast(a.sqrt(), x), _broadcast((1.0 - a).sqrt(), x)

    def eps(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
            alpha_t: torch.Tensor | None = None, sigma_t: torch.Tensor | None = None) -> torch.Tensor:
        """Guided noise prediction; `alpha_t`/`sigma_t` default to the model's schedule at `t`."""
        out = self.output(x, t, cond)
        if self.parameterization != "eps":
            if alpha_t is None:
                alpha_t, sigma_t = self._alpha_sigma(t, x)
            out = eps_from_output(self.parameterization, out, x, _broadcast(alpha_t, x), _broadcast(sigma_t, x))
        if self.score_corrector is not None:
            out = self.score_corrector.modify_score(self.model, out, x, t, cond, **self.corrector_kwargs)
        return out

    def x0(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
           alpha_t: torch.Tensor, sigma_t: torch.Tensor) -> torch.Tensor:
        """Guided data prediction at noise level (alpha_t, sigma_t) (per-sample [B] tensors)."""
        eps = self.eps(x, t, cond, alpha_t, sigma_t)
        return (x - _broadcast(sigma_t, x) * eps) / _broadcast(alpha_t, x)


# ---- helpers the samplers share ---------------------------------------------------------------

def model_device(model: Any) -> torch.device:
    """The device a sampler works on: where the model's schedule lives (never assumed CUDA)."""
    return model.betas.device


def model_dtype(model: Any) -> torch.dtype:
    """Floating dtype of the model's parameters (float32 when it has none, e.g. test doubles)."""
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for p in parameters():
            if p.is_floating_point():
                return p.dtype
    return torch.float32


def conditioning_batch_size(conditioning: Conditioning) -> int | None:
    """Batch size of a conditioning (first tensor found in a dict or list), None if unknown."""
    if isinstance(conditioning, torch.Tensor):
        return conditioning.shape[0]
    if isinstance(conditioning, dict):
        for value in conditioning.values():
            size = conditioning_batch_size(value)
            if size is not None:
                return size
    if isinstance(conditioning, (list, tuple)):
        for value in conditioning:
            size = conditioning_batch_size(value)
            if size is not None:
                return size
        return len(conditioning) if conditioning and isinstance(conditioning[0], str) else None
    return None


def initial_latent(model: Any, size: tuple, x_T: torch.Tensor | None) -> torch.Tensor:
    """`x_T` on the model's device, or fresh N(0, I) noise of `size` in the model's dtype."""
    device = model_device(model)
    if x_T is None:
        return torch.randn(size, device=device, dtype=model_dtype(model))
    return x_T.to(device)


def warn_batch_mismatch(conditioning: Conditioning, batch_size: int) -> None:
    """Log a warning when the conditioning's batch size is not `batch_size`."""
    size = conditioning_batch_size(conditioning)
    if size is not None and size != batch_size:
        logger.warning("got %d conditionings but batch size is %d", size, batch_size)


# ---- the `sample(...)` interface every sampler shares ---------------------------------------------

@dataclass
class SampleCall:
    """The arguments of `Sampler.sample`, with the batch shape `size` = (batch_size, *shape)."""

    S: int
    size: tuple
    conditioning: Conditioning
    callback: Callable | None
    img_callback: Callable | None
    quantize_x0: bool
    eta: float
    mask: torch.Tensor | None
    x0: torch.Tensor | None
    temperature: float
    noise_dropout: float
    score_corrector: Any
    corrector_kwargs: dict | None
    verbose: bool
    x_T: torch.Tensor | None
    log_every_t: int
    unconditional_guidance_scale: float
    unconditional_conditioning: Conditioning

    def guided(self, model: Any) -> GuidedModel:
        return GuidedModel(model, self.unconditional_guidance_scale, self.unconditional_conditioning,
                           self.score_corrector, self.corrector_kwargs)

    def step_logger(self, intermediates: dict, x_transform: Callable | None = None) -> Callable:
        """`on_step(i, x, pred_x0)` for the solvers: callbacks, then intermediates (first step and
        every `log_every_t`-th step counted from the end); `x_transform(i, x)` rescales x to log."""
        def on_step(i: int, x: torch.Tensor, pred_x0: torch.Tensor) -> None:
            if self.callback:
                self.callback(i)
            if self.img_callback:
                self.img_callback(pred_x0, i)
            if (self.S - 1 - i) % self.log_every_t == 0 or i == 0:
                intermediates["x_inter"].append(x if x_transform is None else x_transform(i, x))
                intermediates["pred_x0"].append(pred_x0)
        return on_step


class Sampler:
    """Base of the samplers: the original `sample(...)` interface, implemented by `_sample`."""

    model: Any

    def _check_mask(self, mask: torch.Tensor | None) -> None:
        """Raise if this sampler cannot blend a known region (`mask`/`x0`)."""

    def _sample(self, call: SampleCall, **kwargs: Any) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

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
        """Sample `batch_size` latents of `shape` (C, H, W) in `S` steps.

        Returns `(samples, intermediates)`, intermediates = {'x_inter': [...], 'pred_x0': [...]}
        logged every `log_every_t` steps (entry 0 is the start noise in both lists). Options
        particular to a sampler (see its `_sample`) go through `kwargs`; others are ignored.
        """
        self._check_mask(mask)
        warn_batch_mismatch(conditioning, batch_size)
        call = SampleCall(S, (batch_size, *shape), conditioning, callback, img_callback, quantize_x0, eta,
                          mask, x0, temperature, noise_dropout, score_corrector, corrector_kwargs, verbose,
                          x_T, log_every_t, unconditional_guidance_scale, unconditional_conditioning)
        return self._sample(call, **kwargs)
