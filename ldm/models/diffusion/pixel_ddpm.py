"""`DDPM`: Gaussian diffusion in image space as a Lightning module; the base of `LatentDiffusion`.

Import it from `ldm.models.diffusion.ddpm` (the path the released configs name). The schedule
math lives in `schedule.py`, the loss in `losses.py`, the ancestral sampler in `ancestral.py`,
condition dropout in `conditioning.py`; this class wires them and owns the training loop hooks
(EMA, optimizer, logging).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from ldm.models.diffusion import ancestral, image_logging
from ldm.models.diffusion.conditioning import ConditioningDropout, batch_to_tensor
from ldm.models.diffusion.losses import (
    LOSS_TYPES,
    combine_losses,
    diffusion_target,
    elementwise_loss,
    min_snr_offset_at,
    min_snr_weights,
    offset_noise,
    per_sample_loss,
)
from ldm.models.diffusion.schedule import (
    PARAMETERIZATIONS,
    compute_schedule,
    lvlb_weights,
    make_betas,
    to_buffers,
)
from ldm.models.diffusion.wrapper import DiffusionWrapper
from ldm.modules.diffusionmodules.util import extract_into_tensor
from ldm.modules.ema import LitEma
from ldm.optim import build_adam
from ldm.util import count_params, default, instantiate_from_config

logger = logging.getLogger(__name__)


class DDPM(pl.LightningModule):
    """Denoising diffusion probabilistic model (Ho et al. 2020) in image space.

    Args:
        unet_config: config of the denoising network (usually `UNetModel`).
        timesteps: number of diffusion steps T.
        beta_schedule: "linear" (linear in sqrt(beta), the original's name), "cosine",
            "sqrt_linear" or "sqrt".
        loss_type: "l2" or "l1".
        ckpt_path: checkpoint to load at the end of construction (None: none).
        ignore_keys: key prefixes dropped from that checkpoint.
        load_only_unet: load the checkpoint into `self.model` only (keys without `model.`).
        monitor: the metric a checkpoint callback watches.
        use_ema: keep an exponential moving average of the network (`model_ema.*`).
        first_stage_key: batch key of the images.
        image_size: spatial size of the samples (pixels here, latent cells for LatentDiffusion).
        channels: channels of the samples.
        log_every_t: step interval of the intermediates that sampling and `log_images` keep.
        clip_denoised: clamp predicted x0 to [-1, 1] while sampling.
        linear_start: first beta of the "linear" / "sqrt_linear" / "sqrt" schedules.
        linear_end: last beta of those schedules.
        cosine_s: offset s of the cosine schedule.
        given_betas: explicit betas (overrides the schedule arguments).
        original_elbo_weight: weight of the variational-bound term of the loss.
        v_posterior: posterior variance = (1 - v) * beta_tilde + v * beta.
        l_simple_weight: weight of the simple (unweighted MSE / L1) loss.
        conditioning_key: how conditions enter the network (see `DiffusionWrapper`).
        parameterization: what the network predicts: "eps" (noise), "x0" or "v" (SD 2.x).
        scheduler_config: config of a learning-rate schedule (an object with `schedule(step)`,
            e.g. `ldm.lr_scheduler.LambdaLinearScheduler`), applied per step through LambdaLR.
        use_positional_encodings: not supported (the original never implemented it); must be False.
        learn_logvar: learn a per-timestep log-variance that weights the loss (a Parameter `logvar`).
        logvar_init: initial value of that log-variance.
        ema_decay: decay of the EMA (the original's fixed 0.9999).
        zero_terminal_snr: rescale the schedule to zero SNR at the last step (Lin et al. 2024);
            use it with `parameterization: v`.
        min_snr_gamma: min-SNR-gamma loss weighting (Hang et al. 2023); None turns it off; 5 is
            the paper's choice.
        min_snr_offset: weight the x0 error by min(SNR + offset, gamma); 0 is the paper, 1 keeps
            a weight of at least 1 at high noise (see `losses.min_snr_weights`). Meant for
            `parameterization: v`: with eps the high-noise loss weights become (SNR + offset) / SNR
            (21x for offset 0.1 at this schedule's last step), and the quickstart LDM trained with
            them reached 1.2% caption accuracy after 1000 steps instead of 22% (docs/quickstart.md).
        min_snr_offset_steps: apply `min_snr_offset` during the first this many training steps
            only, then the paper's weighting (`losses.min_snr_offset_at`); None applies it
            throughout. At the switch the optimizer's moments restart (`end_min_snr_offset_phase`).
            A coarse-to-fine curriculum: on the quickstart LDM, 1000 steps of offset 1 learnt which
            object goes where with seed 0 only, and with seeds 1 and 2 as well once its text encoder
            trained at a quarter of the learning rate (`cond_stage_lr_scale`; docs/quickstart.md).
        offset_noise_strength: add this times a per-channel constant to the training noise
            (offset noise); 0 turns it off (0.1 is usual).
        conditioning_dropout: per batch key, the probability of replacing a condition by a null
            value during training, `{key: {p: 0.1, val: ""}}` (classifier-free guidance).
        ucg_training: Stable Diffusion 2's name for `conditioning_dropout` (same layout).
    """

    def __init__(
        self,
        unet_config: Any,
        timesteps: int = 1000,
        beta_schedule: str = "linear",
        loss_type: str = "l2",
        ckpt_path: str | None = None,
        ignore_keys: Sequence[str] = (),
        load_only_unet: bool = False,
        monitor: str | None = "val/loss",
        use_ema: bool = True,
        first_stage_key: str = "image",
        image_size: int = 256,
        channels: int = 3,
        log_every_t: int = 100,
        clip_denoised: bool = True,
        linear_start: float = 1e-4,
        linear_end: float = 2e-2,
        cosine_s: float = 8e-3,
        given_betas: Sequence[float] | None = None,
        original_elbo_weight: float = 0.0,
        v_posterior: float = 0.0,
        l_simple_weight: float = 1.0,
        conditioning_key: str | None = None,
        parameterization: str = "eps",
        scheduler_config: Any = None,
        use_positional_encodings: bool = False,
        learn_logvar: bool = False,
        logvar_init: float = 0.0,
        ema_decay: float = 0.9999,
        zero_terminal_snr: bool = False,
        min_snr_gamma: float | None = None,
        min_snr_offset: float = 0.0,
        min_snr_offset_steps: int | None = None,
        offset_noise_strength: float = 0.0,
        conditioning_dropout: Mapping[str, Any] | None = None,
        ucg_training: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got '{parameterization}'")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got '{loss_type}'")
        if use_positional_encodings:
            raise ValueError("use_positional_encodings is not supported (the original never implemented it)")
        if zero_terminal_snr and parameterization == "eps":
            logger.warning("zero_terminal_snr with eps-parameterization: x0 cannot be recovered at the last "
                           "step; use parameterization: v")
        self.parameterization = parameterization
        logger.info("%s: running in %s-prediction mode", type(self).__name__, parameterization)
        self.cond_stage_model: nn.Module | None = None
        self.clip_denoised = clip_denoised
        self.log_every_t = log_every_t
        self.first_stage_key = first_stage_key
        self.image_size = image_size
        self.channels = channels
        self.use_positional_encodings = False
        self.model = DiffusionWrapper(unet_config, conditioning_key)
        logger.info("%s: the diffusion model has %.2fM parameters", type(self).__name__,
                    count_params(self.model) * 1e-6)
        self.use_ema = use_ema
        if use_ema:
            self.model_ema = LitEma(self.model, decay=ema_decay)
            logger.info("keeping EMAs of %d tensors", len(list(self.model_ema.buffers())))
        self.use_scheduler = scheduler_config is not None
        if self.use_scheduler:
            self.scheduler_config = scheduler_config
        self.v_posterior = v_posterior
        self.original_elbo_weight = original_elbo_weight
        self.l_simple_weight = l_simple_weight
        self.loss_type = loss_type
        if min_snr_offset < 0:
            raise ValueError(f"min_snr_offset must be non-negative, got {min_snr_offset}")
        if min_snr_offset and min_snr_gamma is None:
            raise ValueError("min_snr_offset needs min_snr_gamma (it shifts the min-SNR weights)")
        if min_snr_offset and zero_terminal_snr and parameterization == "eps":
            raise ValueError("min_snr_offset with zero_terminal_snr needs parameterization v or x0: "
                             "eps says nothing about x0 at the zero-SNR step")
        if min_snr_offset_steps is not None and (min_snr_offset_steps < 0 or not min_snr_offset):
            raise ValueError(f"min_snr_offset_steps={min_snr_offset_steps} needs min_snr_offset > 0 and a "
                             "non-negative step count")
        self.min_snr_gamma = min_snr_gamma
        self.min_snr_offset = min_snr_offset
        self.min_snr_offset_steps = min_snr_offset_steps
        self.offset_noise_strength = offset_noise_strength
        if conditioning_dropout is not None and ucg_training is not None:
            raise ValueError("give conditioning_dropout or ucg_training, not both")
        self.conditioning_dropout = ConditioningDropout(default(conditioning_dropout, ucg_training))
        if monitor is not None:
            self.monitor = monitor
        self.register_schedule(given_betas=given_betas, beta_schedule=beta_schedule, timesteps=timesteps,
                               linear_start=linear_start, linear_end=linear_end, cosine_s=cosine_s,
                               zero_terminal_snr=zero_terminal_snr)
        self.learn_logvar = learn_logvar
        logvar = torch.full(fill_value=float(logvar_init), size=(self.num_timesteps,), device="cpu")
        # A plain attribute (not saved) unless learned, as in the released checkpoints.
        self.logvar: Tensor = nn.Parameter(logvar, requires_grad=True) if learn_logvar else logvar
        if ckpt_path is not None:
            self.init_from_ckpt(ckpt_path, ignore_keys=ignore_keys, only_model=load_only_unet)

    # ---- schedule ---------------------------------------------------------------------------

    def register_schedule(self, given_betas: Sequence[float] | None = None, beta_schedule: str = "linear",
                          timesteps: int = 1000, linear_start: float = 1e-4, linear_end: float = 2e-2,
                          cosine_s: float = 8e-3, zero_terminal_snr: bool = False) -> None:
        """Register the 12 schedule buffers (float64 math, float32 buffers) and `lvlb_weights`."""
        betas = make_betas(beta_schedule, timesteps, linear_start, linear_end, cosine_s, given_betas,
                           zero_terminal_snr)
        schedule = compute_schedule(betas, self.v_posterior)
        self.num_timesteps = int(betas.shape[0])
        self.linear_start = linear_start
        self.linear_end = linear_end
        for name, value in to_buffers(schedule).items():
            self.register_buffer(name, value)
        self.register_buffer("lvlb_weights", lvlb_weights(schedule, self.parameterization), persistent=False)

    # ---- the forward process and its inversions ------------------------------------------------

    def _at(self, buffer: Tensor, t: Tensor, shape: torch.Size) -> Tensor:
        return extract_into_tensor(buffer, t, shape)

    def q_mean_variance(self, x_start: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and log-variance of q(x_t | x_0)."""
        mean = self._at(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
        variance = self._at(1.0 - self.alphas_cumprod, t, x_start.shape)
        log_variance = self._at(self.log_one_minus_alphas_cumprod, t, x_start.shape)
        return mean, variance, log_variance

    def q_sample(self, x_start: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        noise = default(noise, lambda: torch.randn_like(x_start))
        return (self._at(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + self._at(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def q_posterior(self, x_start: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (self._at(self.posterior_mean_coef1, t, x_t.shape) * x_start
                + self._at(self.posterior_mean_coef2, t, x_t.shape) * x_t)
        variance = self._at(self.posterior_variance, t, x_t.shape)
        log_variance = self._at(self.posterior_log_variance_clipped, t, x_t.shape)
        return mean, variance, log_variance

    def predict_start_from_noise(self, x_t: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return (self._at(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                - self._at(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * noise)

    def _predict_eps_from_xstart(self, x_t: Tensor, t: Tensor, pred_xstart: Tensor) -> Tensor:
        return ((self._at(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart)
                / self._at(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))

    def predict_start_from_z_and_v(self, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """x0 = sqrt(abar) x_t - sqrt(1 - abar) v."""
        return (self._at(self.sqrt_alphas_cumprod, t, x_t.shape) * x_t
                - self._at(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape) * v)

    def predict_eps_from_z_and_v(self, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """eps = sqrt(abar) v + sqrt(1 - abar) x_t."""
        return (self._at(self.sqrt_alphas_cumprod, t, x_t.shape) * v
                + self._at(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape) * x_t)

    def get_v(self, x: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """v = sqrt(abar) noise - sqrt(1 - abar) x0 (Salimans & Ho 2022)."""
        return diffusion_target("v", x, noise, t, self.sqrt_alphas_cumprod, self.sqrt_one_minus_alphas_cumprod)

    def predict_start_from_model_output(self, x_t: Tensor, t: Tensor, model_output: Tensor) -> Tensor:
        """x0 from the network's output, whatever it predicts."""
        if self.parameterization == "eps":
            return self.predict_start_from_noise(x_t, t=t, noise=model_output)
        if self.parameterization == "v":
            return self.predict_start_from_z_and_v(x_t, t, model_output)
        return model_output

    # ---- the network --------------------------------------------------------------------------

    def apply_model(self, x_noisy: Tensor, t: Tensor, cond: Any = None, return_ids: bool = False) -> Tensor:
        """The network's output for x_t at timesteps t; `cond` is a tensor, a list of tensors,
        or a dict `{"c_concat": [...], "c_crossattn": [...]}` (see `DiffusionWrapper`)."""
        if self.model.conditioning_key is None:
            out = self.model(x_noisy, t)
        else:
            if not isinstance(cond, dict):
                cond = cond if isinstance(cond, list) else [cond]
                key = "c_concat" if self.model.conditioning_key == "concat" else "c_crossattn"
                cond = {key: cond}
            out = self.model(x_noisy, t, **cond)
        if isinstance(out, tuple) and not return_ids:
            return out[0]
        return out

    # ---- training -----------------------------------------------------------------------------

    def training_noise(self, x_start: Tensor) -> Tensor:
        """The noise of a training step: standard normal, plus offset noise when configured."""
        if self.offset_noise_strength:
            return offset_noise(x_start, self.offset_noise_strength)
        return torch.randn_like(x_start)

    def get_loss(self, pred: Tensor, target: Tensor, mean: bool = True) -> Tensor:
        loss = elementwise_loss(pred, target, self.loss_type)
        return loss.mean() if mean else loss

    def p_losses(self, x_start: Tensor, cond: Any, t: Tensor, noise: Tensor | None = None) -> tuple[Tensor, dict]:
        """The training loss at timesteps t and the logged values (`train/...` in training mode,
        `val/...` in eval mode)."""
        noise = default(noise, lambda: self.training_noise(x_start))
        x_noisy = self.q_sample(x_start=x_start, t=t, noise=noise)
        model_output = self.apply_model(x_noisy, t, cond)
        target = diffusion_target(self.parameterization, x_start, noise, t, self.sqrt_alphas_cumprod,
                                  self.sqrt_one_minus_alphas_cumprod)
        loss_simple = per_sample_loss(model_output, target, self.loss_type)
        weights = None
        if self.min_snr_gamma is not None:
            offset = min_snr_offset_at(self.global_step, self.min_snr_offset, self.min_snr_offset_steps)
            weights = min_snr_weights(self.alphas_cumprod, t, self.min_snr_gamma, self.parameterization, offset)
        return combine_losses(
            loss_simple, t, logvar=self.logvar, lvlb_weights=self.lvlb_weights,
            l_simple_weight=self.l_simple_weight, original_elbo_weight=self.original_elbo_weight,
            learn_logvar=self.learn_logvar, prefix="train" if self.training else "val", sample_weights=weights)

    def sample_timesteps(self, n: int) -> Tensor:
        return torch.randint(0, self.num_timesteps, (n,), device=self.device).long()

    def forward(self, x: Tensor, c: Any = None, *args: Any, **kwargs: Any) -> tuple[Tensor, dict]:
        return self.p_losses(x, c, self.sample_timesteps(x.shape[0]), *args, **kwargs)

    def get_input(self, batch: Mapping[str, Any], k: str) -> Tensor:
        """`batch[k]` as a float [B, C, H, W] tensor (the data sets yield [B, H, W, C])."""
        return batch_to_tensor(batch, k)

    def shared_step(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict]:
        x = self.get_input(batch, self.first_stage_key)
        return self(x)

    def drop_conditions(self, batch: Mapping[str, Any]) -> Mapping[str, Any]:
        """The batch with conditions randomly nulled (conditioning dropout), training only."""
        return self.conditioning_dropout.apply(batch) if self.conditioning_dropout else batch

    def batch_size_of(self, batch: Mapping[str, Any]) -> int | None:
        """The number of samples in a batch (for logging)."""
        value = batch.get(self.first_stage_key)
        return len(value) if value is not None else None

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        loss, loss_dict = self.shared_step(self.drop_conditions(batch))
        self.log_dict(loss_dict, prog_bar=True, logger=True, on_step=True, on_epoch=True,
                      batch_size=self.batch_size_of(batch))
        self.log("global_step", float(self.global_step), prog_bar=True, logger=True, on_step=True, on_epoch=False)
        if self.use_scheduler:
            lr = self.optimizers().param_groups[0]["lr"]
            self.log("lr_abs", lr, prog_bar=True, logger=True, on_step=True, on_epoch=False)
        return loss

    @torch.no_grad()
    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        _, loss_dict_no_ema = self.shared_step(batch)
        with self.ema_scope():
            _, loss_dict_ema = self.shared_step(batch)
            loss_dict_ema = {key + "_ema": value for key, value in loss_dict_ema.items()}
        n = self.batch_size_of(batch)
        self.log_dict(loss_dict_no_ema, prog_bar=False, logger=True, on_step=False, on_epoch=True, batch_size=n)
        self.log_dict(loss_dict_ema, prog_bar=False, logger=True, on_step=False, on_epoch=True, batch_size=n)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.min_snr_offset_steps is not None and self._trainer is not None:
            self.end_min_snr_offset_phase(self.trainer.optimizers)

    def end_min_snr_offset_phase(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """At global step `min_snr_offset_steps`, where the loss drops its offset, restart the
        optimizers' moment estimates. Adam's second moments still carry the offset phase's large
        high-noise gradients and would shrink the steps for about 1/(1 - beta2) = 1000 steps:
        measured on the quickstart LDM, shape accuracy 1000 steps after the switch was 38.5%
        without the restart and 61.5% with it (docs/quickstart.md)."""
        if self.min_snr_offset_steps is None or self.global_step != self.min_snr_offset_steps:
            return
        for optimizer in optimizers:
            optimizer.state.clear()
        logger.info("step %d: min_snr_offset phase over, optimizer moments restarted", self.global_step)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.use_ema:
            self.model_ema(self.model)

    @contextmanager
    def ema_scope(self, context: str | None = None) -> Iterator[None]:
        """Inside the block the network holds its EMA weights (a no-op without EMA)."""
        if self.use_ema:
            self.model_ema.store(self.model.parameters())
            self.model_ema.copy_to(self.model)
            if context is not None:
                logger.info("%s: switched to EMA weights", context)
        try:
            yield None
        finally:
            if self.use_ema:
                self.model_ema.restore(self.model.parameters())
                if context is not None:
                    logger.info("%s: restored training weights", context)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer updates: the network, plus `logvar` when it is learned."""
        params = list(self.model.parameters())
        if self.learn_logvar:
            params.append(self.logvar)
        return params

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """AdamW's parameter groups: every trainable parameter at `lr`."""
        return [{"params": self.trainable_parameters(), "lr": lr}]

    def configure_optimizers(self) -> Any:
        lr = getattr(self, "learning_rate", None)
        if lr is None:
            raise ValueError(f"{type(self).__name__}.learning_rate is not set (main.py sets it from "
                             "model.base_learning_rate)")
        opt = build_adam(torch.optim.AdamW, self.optimizer_groups(lr), lr=lr)
        if not self.use_scheduler:
            return opt
        scheduler = instantiate_from_config(self.scheduler_config)
        logger.info("setting up a LambdaLR scheduler (%s), updated every step", type(scheduler).__name__)
        return [opt], [{"scheduler": LambdaLR(opt, lr_lambda=scheduler.schedule), "interval": "step",
                        "frequency": 1}]

    # ---- checkpoints --------------------------------------------------------------------------

    def init_from_ckpt(self, path: str | Path, ignore_keys: Sequence[str] = (), only_model: bool = False) -> None:
        """Load weights from `path` strictly through `ldm.checkpoint` (safe unpickling; keys under
        an `ignore_keys` prefix are skipped; any other missing or unexpected key is an error)."""
        from ldm.checkpoint import load_checkpoint, load_state_dict_into

        ckpt = load_checkpoint(path)
        if only_model:
            prefix = "model." if any(k.startswith("model.") for k in ckpt["state_dict"]) else ""
            load_state_dict_into(self.model, ckpt["state_dict"], ignore_keys=ignore_keys, prefix=prefix,
                                 source=str(path))
        else:
            load_state_dict_into(self, ckpt["state_dict"], ignore_keys=ignore_keys, source=str(path))
        logger.info("restored weights from %s", path)

    # ---- sampling (ancestral DDPM) ------------------------------------------------------------

    def p_mean_variance(self, x: Tensor, c: Any, t: Tensor, clip_denoised: bool, **kwargs: Any):
        return ancestral.p_mean_variance(self, x, c, t, clip_denoised, **kwargs)

    def p_sample(self, x: Tensor, c: Any, t: Tensor, **kwargs: Any):
        return ancestral.p_sample(self, x, c, t, **kwargs)

    def p_sample_loop(self, cond: Any, shape: Sequence[int], **kwargs: Any):
        return ancestral.p_sample_loop(self, cond, shape, **kwargs)

    def progressive_denoising(self, cond: Any, shape: Sequence[int], **kwargs: Any):
        return ancestral.progressive_denoising(self, cond, shape, **kwargs)

    @torch.no_grad()
    def sample(self, cond: Any = None, batch_size: int = 16, return_intermediates: bool = False,
               x_T: Tensor | None = None, verbose: bool = True, timesteps: int | None = None,
               quantize_denoised: bool = False, mask: Tensor | None = None, x0: Tensor | None = None,
               shape: Sequence[int] | None = None, **kwargs: Any):
        """`batch_size` samples by the ancestral sampler. Other keyword arguments (a DDIM `eta`,
        say) are ignored, as the original does."""
        if kwargs:
            logger.debug("sample: ignoring %s", ", ".join(kwargs))
        shape = shape or (batch_size, self.channels, self.image_size, self.image_size)
        if cond is not None:
            cond = ancestral.slice_condition(cond, batch_size)
        return self.p_sample_loop(cond, shape, return_intermediates=return_intermediates, x_T=x_T,
                                  verbose=verbose, timesteps=timesteps, quantize_denoised=quantize_denoised,
                                  mask=mask, x0=x0)

    @torch.no_grad()
    def log_images(self, batch: Mapping[str, Any], N: int = 8, n_row: int = 2, sample: bool = True,
                   return_keys: Sequence[str] | None = None, **kwargs: Any) -> dict[str, Tensor]:
        """Inputs, a diffusion row and (with `sample`) samples with their denoising row."""
        log: dict[str, Tensor] = {}
        x = self.get_input(batch, self.first_stage_key)
        N = min(x.shape[0], N)
        n_row = min(x.shape[0], n_row)
        x = x.to(self.device)[:N]
        log["inputs"] = x
        log["diffusion_row"] = image_logging.diffusion_row(x[:n_row], self.q_sample, self.num_timesteps,
                                                           self.log_every_t)
        if sample:
            with self.ema_scope("Plotting"):
                samples, denoise_row = self.sample(batch_size=N, return_intermediates=True, verbose=False)
            log["samples"] = samples
            log["denoise_row"] = image_logging.rows_to_grid(denoise_row)
        return select_keys(log, return_keys)


def select_keys(log: dict[str, Tensor], return_keys: Sequence[str] | None) -> dict[str, Tensor]:
    """`log` restricted to `return_keys` (all of it when none of them is present), as the original."""
    if return_keys and np.intersect1d(list(log), list(return_keys)).shape[0] > 0:
        return {key: log[key] for key in return_keys if key in log}
    return log
