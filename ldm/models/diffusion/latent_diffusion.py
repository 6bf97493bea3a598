"""`LatentDiffusion`: diffusion in the latent space of a frozen autoencoder (Rombach et al. 2022).

Import it from `ldm.models.diffusion.ddpm` (the path the released configs name). Data flow:
batch -> `get_input` (encode with the first stage, scale by `scale_factor`, encode the
condition) -> `p_losses`; sampling decodes with `decode_first_stage`. Image logging lives in
`latent_logging.py`, patch-wise coding in `first_stage.py`.

Precomputed latents (`scripts/cache_latents.py`, `ldm.data.cached_latents`): when a batch holds
`cached_latent_key`, the first stage is not run: the value is the posterior's moments
([B, 2C, h, w], mean and log-variance; a fresh sample is drawn each step, as when encoding) or
a deterministic latent ([B, C, h, w], VQ / identity first stages). A batch may likewise hold
the frozen condition encoder's output under `cached_cond_key`.
"""
from __future__ import annotations

import logging
import types
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from ldm.models.diffusion import first_stage as patches
from ldm.models.diffusion.conditioning import (
    BATCH_CONDITION_KEYS,
    condition_input,
    encode_condition,
    null_condition_input,
    replace_rows,
    slice_batch,
)
from ldm.models.diffusion.latent_logging import log_latent_images
from ldm.models.diffusion.pixel_ddpm import DDPM
from ldm.modules.distributions.distributions import DiagonalGaussianDistribution
from ldm.util import default, instantiate_from_config

logger = logging.getLogger(__name__)


def disabled_train(self: nn.Module, mode: bool = True) -> nn.Module:
    """Replaces `train` of frozen submodules, so that train/eval mode does not change any more."""
    return self


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode for good, no gradients."""
    model = model.eval()
    model.train = types.MethodType(disabled_train, model)
    for param in model.parameters():
        param.requires_grad = False
    return model


class LatentDiffusion(DDPM):
    """A DDPM in the latent space of a frozen first-stage autoencoder, with conditions.

    Args (besides those of `DDPM`):
        first_stage_config: config of the autoencoder (`AutoencoderKL`, `VQModelInterface`,
            `IdentityFirstStage`); frozen.
        cond_stage_config: config of the condition encoder, or "__is_first_stage__" (the first
            stage encodes the condition) or "__is_unconditional__" (no condition).
        num_timesteps_cond: with > 1 the condition is itself diffused over that many steps
            (original option; keep 1).
        cond_stage_key: batch key of the condition.
        cond_stage_trainable: train the condition encoder with the network (else frozen).
        cond_stage_lr_scale: the trainable condition encoder's learning rate as a multiple of the
            network's (its own optimizer parameter group). On the quickstart LDM a text encoder
            trained from scratch at 0.25x learnt the relation words where 1x did not
            (docs/quickstart.md).
        concat_mode: when `conditioning_key` is not given: "concat" if True, else "crossattn".
        cond_stage_forward: name of the encoder method to call instead of `encode` / `forward`.
        conditioning_key: how conditions enter the network (see `DiffusionWrapper`).
        scale_factor: latents are multiplied by it (LDM Sec. 4.3.2; 0.18215 for SD's KL-f8).
        scale_by_std: set `scale_factor` to 1/std of the first training batch's latents (a saved
            buffer; `scale_factor` must then be 1.0).
        cached_latent_key: batch key of precomputed first-stage latents (see module doc).
        cached_cond_key: batch key of precomputed condition embeddings.
        concat_mask_key: batch key of an inpainting mask that is resized to the latent size and
            concatenated after the encoded condition (the released `inpainting_big` layout:
            masked image latent + mask); None: no mask.
        split_input_params: patch-wise coding and denoising of large inputs (see `first_stage.py`);
            None: off.
    """

    def __init__(
        self,
        first_stage_config: Any,
        cond_stage_config: Any,
        num_timesteps_cond: int | None = None,
        cond_stage_key: str = "image",
        cond_stage_trainable: bool = False,
        cond_stage_lr_scale: float = 1.0,
        concat_mode: bool = True,
        cond_stage_forward: str | None = None,
        conditioning_key: str | None = None,
        scale_factor: float = 1.0,
        scale_by_std: bool = False,
        cached_latent_key: str = "latent",
        cached_cond_key: str = "cond_embedding",
        concat_mask_key: str | None = None,
        split_input_params: Mapping[str, Any] | None = None,
        *args: Any,
        **kwargs: Any,
    ):
        self.num_timesteps_cond = default(num_timesteps_cond, 1)
        self.scale_by_std = scale_by_std
        if self.num_timesteps_cond > kwargs.get("timesteps", 1000):
            raise ValueError("num_timesteps_cond cannot exceed timesteps")
        if conditioning_key is None:  # backwards compatibility (the original's rule)
            conditioning_key = "concat" if concat_mode else "crossattn"
        if cond_stage_config == "__is_unconditional__":
            conditioning_key = None
        ckpt_path = kwargs.pop("ckpt_path", None)
        ignore_keys = kwargs.pop("ignore_keys", [])
        load_only_unet = kwargs.pop("load_only_unet", False)
        super().__init__(*args, conditioning_key=conditioning_key, **kwargs)
        self.concat_mode = concat_mode
        self.cond_stage_trainable = cond_stage_trainable
        if cond_stage_lr_scale <= 0 or (cond_stage_lr_scale != 1.0 and not cond_stage_trainable):
            raise ValueError(f"cond_stage_lr_scale={cond_stage_lr_scale} needs a positive value and "
                             "cond_stage_trainable: true")
        self.cond_stage_lr_scale = cond_stage_lr_scale
        self.cond_stage_key = cond_stage_key
        self.cached_latent_key = cached_latent_key
        self.cached_cond_key = cached_cond_key
        self.concat_mask_key = concat_mask_key
        try:
            self.num_downs = len(first_stage_config["params"]["ddconfig"]["ch_mult"]) - 1
        except (KeyError, TypeError):
            self.num_downs = 0
        if not scale_by_std:
            self.scale_factor = scale_factor
        else:
            self.register_buffer("scale_factor", torch.tensor(float(scale_factor)))
        self.instantiate_first_stage(first_stage_config)
        self.instantiate_cond_stage(cond_stage_config)
        self.cond_stage_forward = cond_stage_forward
        self.clip_denoised = False
        self.bbox_tokenizer = None
        if split_input_params is not None:
            self.split_input_params = dict(split_input_params)
        self._null_embeddings: dict[str, Tensor] = {}
        key = self.cond_stage_key
        if (self.conditioning_dropout.probability(key) > 0 and key in BATCH_CONDITION_KEYS
                and self.null_value(key) is None):
            raise ValueError(f"conditioning_dropout of '{key}' needs a null value: set its 'val' (a class index "
                             "not used otherwise) or give the class encoder a null class")
        self.restarted_from_ckpt = False
        if ckpt_path is not None:
            self.init_from_ckpt(ckpt_path, ignore_keys, only_model=load_only_unet)
            self.restarted_from_ckpt = True

    # ---- construction -------------------------------------------------------------------------

    def make_cond_schedule(self) -> None:
        self.cond_ids = torch.full(size=(self.num_timesteps,), fill_value=self.num_timesteps - 1, dtype=torch.long)
        ids = torch.round(torch.linspace(0, self.num_timesteps - 1, self.num_timesteps_cond)).long()
        self.cond_ids[: self.num_timesteps_cond] = ids

    def register_schedule(self, *args: Any, **kwargs: Any) -> None:
        super().register_schedule(*args, **kwargs)
        self.shorten_cond_schedule = self.num_timesteps_cond > 1
        if self.shorten_cond_schedule:
            self.make_cond_schedule()

    def instantiate_first_stage(self, config: Any) -> None:
        self.first_stage_model = freeze(instantiate_from_config(config))

    def instantiate_cond_stage(self, config: Any) -> None:
        if self.cond_stage_trainable:
            if config in ("__is_first_stage__", "__is_unconditional__"):
                raise ValueError(f"cond_stage_trainable cannot be used with cond_stage_config '{config}'")
            self.cond_stage_model = instantiate_from_config(config)
        elif config == "__is_first_stage__":
            logger.info("using the first stage also as the condition encoder")
            self.cond_stage_model = self.first_stage_model
        elif config == "__is_unconditional__":
            logger.info("training %s as an unconditional model", type(self).__name__)
            self.cond_stage_model = None
        else:
            self.cond_stage_model = freeze(instantiate_from_config(config))

    # ---- scale_by_std -------------------------------------------------------------------------

    def _trainer_value(self, name: str, fallback: Any) -> Any:
        trainer = self._trainer
        return fallback if trainer is None else getattr(trainer, name, fallback)

    @torch.no_grad()
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """With `scale_by_std`, on the very first batch of a fresh run: scale_factor = 1/std of
        the batch's latents. Computed on rank 0 and broadcast, so every rank uses the same value."""
        super().on_train_batch_start(batch, batch_idx)
        if not (self.scale_by_std and self._trainer_value("current_epoch", 0) == 0
                and self._trainer_value("global_step", 0) == 0 and batch_idx == 0
                and not self.restarted_from_ckpt):
            return
        if float(self.scale_factor) != 1.0:
            raise ValueError("scale_by_std needs scale_factor 1.0 (rather not use custom rescaling and "
                             "std-rescaling simultaneously)")
        value = torch.zeros((), dtype=torch.float32)
        if self._trainer_value("global_rank", 0) == 0:
            z, _ = self._latents(batch, self.first_stage_key, None)  # images or cached latents
            value = (1.0 / z.flatten().std()).float().cpu()
        strategy = self._trainer_value("strategy", None)
        if strategy is not None and getattr(strategy, "world_size", 1) > 1:
            value = strategy.broadcast(value, src=0)
        self.scale_factor.copy_(value.to(self.scale_factor.device))
        logger.info("scale_by_std: scale_factor set to %.6f", float(self.scale_factor))
        if isinstance(self._trainer, pl.Trainer):
            self.log("scale_factor", float(self.scale_factor), on_step=True, on_epoch=False, logger=True)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A resumed run keeps the saved scale_factor instead of estimating a new one.
        self.restarted_from_ckpt = True
        self._null_embeddings.clear()

    # ---- first stage --------------------------------------------------------------------------

    def get_first_stage_encoding(self, encoder_posterior: Any) -> Tensor:
        """scale_factor * latent: a sample of a Gaussian posterior, or the tensor itself."""
        if isinstance(encoder_posterior, DiagonalGaussianDistribution):
            z = encoder_posterior.sample()
        elif isinstance(encoder_posterior, Tensor):
            z = encoder_posterior
        else:
            raise TypeError(f"encoder_posterior of type '{type(encoder_posterior).__name__}' is not supported")
        return self.scale_factor * z

    def _patchwise_coding(self) -> bool:
        return getattr(self, "split_input_params", None) is not None and \
            self.split_input_params.get("patch_distributed_vq", False)

    def _is_vq(self) -> bool:
        from ldm.models.autoencoder import VQModelInterface
        return isinstance(self.first_stage_model, VQModelInterface)

    def _decode(self, z: Tensor, force_not_quantize: bool) -> Tensor:
        if self._is_vq():
            return self.first_stage_model.decode(z, force_not_quantize=force_not_quantize)
        return self.first_stage_model.decode(z)

    def differentiable_decode_first_stage(self, z: Tensor, predict_cids: bool = False,
                                          force_not_quantize: bool = False) -> Tensor:
        """Images from scaled latents: first_stage.decode(z / scale_factor) (patch-wise if set)."""
        if predict_cids:
            if z.dim() == 4:
                z = torch.argmax(z.exp(), dim=1).long()
            z = self.first_stage_model.quantize.get_codebook_entry(z, shape=None)
            z = z.permute(0, 3, 1, 2).contiguous()
        z = 1.0 / self.scale_factor * z
        force = predict_cids or force_not_quantize
        if self._patchwise_coding():
            params = self.split_input_params
            return patches.patchwise(lambda crop, i: self._decode(crop, force), z, params, scale=params["vqf"])
        return self._decode(z, force)

    @torch.no_grad()
    def decode_first_stage(self, z: Tensor, predict_cids: bool = False, force_not_quantize: bool = False) -> Tensor:
        return self.differentiable_decode_first_stage(z, predict_cids, force_not_quantize)

    @torch.no_grad()
    def encode_first_stage(self, x: Tensor) -> Any:
        """The first stage's encoding of images x: a posterior (KL) or a latent tensor."""
        if not self._patchwise_coding():
            return self.first_stage_model.encode(x)
        params = self.split_input_params
        params["original_image_size"] = x.shape[-2:]
        gaussian = False

        def encode(crop: Tensor, i: int) -> Tensor:
            nonlocal gaussian
            out = self.first_stage_model.encode(crop)
            if isinstance(out, DiagonalGaussianDistribution):  # blend the moments, re-wrap below
                gaussian = True
                return out.parameters
            return out

        out = patches.patchwise(encode, x, params, scale=1.0 / params["vqf"])
        return DiagonalGaussianDistribution(out) if gaussian else out

    # ---- conditions ---------------------------------------------------------------------------

    def get_learned_conditioning(self, c: Any) -> Any:
        """The condition encoder's output for raw conditions c (captions, class batch, images)."""
        return encode_condition(self.cond_stage_model, c, self.cond_stage_forward)

    def _mask_channel(self, batch: Mapping[str, Any], c: Tensor, n: int | None) -> Tensor:
        """The inpainting mask at the latent size in {-1, 1} (1: to fill), as the released model saw it."""
        mask = slice_batch(DDPM.get_input(self, batch, self.concat_mask_key), n).to(c.device, c.dtype)
        if mask.min() >= 0:  # a {0, 1} mask
            mask = 2.0 * mask - 1.0
        return torch.nn.functional.interpolate(mask, size=c.shape[-2:])

    def null_value(self, key: str) -> Any:
        """The raw null condition of `key`: the conditioning-dropout value if configured, else
        (for the condition key) the encoder's `null_condition`, else "" for text keys, else None."""
        val = self.conditioning_dropout.null_value(key)
        if val is not None or key != self.cond_stage_key:
            return val
        null_condition = getattr(self.cond_stage_model, "null_condition", None)
        if callable(null_condition):
            try:
                null = null_condition(1, device="cpu")
            except (NotImplementedError, ValueError):
                null = None
            if isinstance(null, Mapping):
                null = null.get(key, next(iter(null.values())))
            if null is not None:
                return null[0]
        return "" if key in ("caption", "txt") else None

    def _null_embedding(self, key: str) -> Tensor:
        if key not in self._null_embeddings:
            null = null_condition_input(key, self.null_value(key), 1, self.device)
            self._null_embeddings[key] = self.get_learned_conditioning(null).detach()
        return self._null_embeddings[key]

    def drop_conditions(self, batch: Mapping[str, Any]) -> Mapping[str, Any]:
        """Conditioning dropout (training only). A cached embedding of the condition key is
        nulled with the encoder's output for the null value."""
        if not self.conditioning_dropout:
            return batch
        key = self.cond_stage_key
        nulls = {key: self.null_value(key)}
        if self.cached_cond_key in batch and self.conditioning_dropout.probability(key) > 0:
            batch = dict(batch)
            emb = batch[self.cached_cond_key]
            mask = self.conditioning_dropout.drop_mask(emb.shape[0], self.conditioning_dropout.probability(key))
            with torch.no_grad():
                batch[self.cached_cond_key] = replace_rows(emb, mask, self._null_embedding(key).to(emb)[0])
            return self.conditioning_dropout.apply(batch, skip=(key,))
        return self.conditioning_dropout.apply(batch, nulls=nulls)

    @torch.no_grad()
    def get_unconditional_conditioning(self, batch_size: int, null_label: Any = None) -> Any:
        """The encoded null condition for `batch_size` samples (classifier-free guidance):
        `null_label` if given, else `null_value(cond_stage_key)`."""
        key = self.cond_stage_key
        null = default(null_label, self.null_value(key))
        if null is None:
            raise ValueError(f"no null value known for condition key '{key}': pass null_label or set "
                             "conditioning_dropout")
        return self.get_learned_conditioning(null_condition_input(key, null, batch_size, self.device))

    # ---- inputs -------------------------------------------------------------------------------

    def _latents(self, batch: Mapping[str, Any], k: str, bs: int | None) -> tuple[Tensor, Tensor | None]:
        """(scaled latents z, images x or None) from images or from cached latents."""
        if self.cached_latent_key in batch:
            cached = slice_batch(batch[self.cached_latent_key], bs).to(self.device).float()
            if cached.shape[1] == 2 * self.channels:
                z = self.get_first_stage_encoding(DiagonalGaussianDistribution(cached))
            elif cached.shape[1] == self.channels:
                z = self.get_first_stage_encoding(cached)
            else:
                raise ValueError(f"cached latents have {cached.shape[1]} channels; expected {self.channels} "
                                 f"(a latent) or {2 * self.channels} (posterior moments)")
            x = slice_batch(DDPM.get_input(self, batch, k), bs).to(self.device) if k in batch else None
            return z.detach(), x
        x = slice_batch(DDPM.get_input(self, batch, k), bs).to(self.device)
        return self.get_first_stage_encoding(self.encode_first_stage(x)).detach(), x

    @torch.no_grad()
    def get_input(self, batch: Mapping[str, Any], k: str, return_first_stage_outputs: bool = False,
                  force_c_encode: bool = False, cond_key: str | None = None, return_original_cond: bool = False,
                  bs: int | None = None) -> list[Any]:
        """[z, c] (+ [x, xrec] with `return_first_stage_outputs`, + [xc] with
        `return_original_cond`): scaled latents, the (encoded unless trainable) condition."""
        z, x = self._latents(batch, k, bs)
        c = xc = None
        if self.model.conditioning_key is not None:
            cond_key = default(cond_key, self.cond_stage_key)
            if cond_key == self.cond_stage_key and self.cached_cond_key in batch:
                c = slice_batch(batch[self.cached_cond_key], bs).to(self.device)
                xc = batch.get(cond_key)
            else:
                xc = x if cond_key == self.first_stage_key and x is not None else condition_input(
                    batch, cond_key, self.device)
                if not self.cond_stage_trainable or force_c_encode:
                    c = self.get_learned_conditioning(xc if isinstance(xc, (dict, list, tuple)) else xc.to(self.device))
                else:
                    c = xc
                c = slice_batch(c, bs)
            if self.concat_mask_key is not None and isinstance(c, Tensor):
                c = torch.cat([c, self._mask_channel(batch, c, bs)], dim=1)
        out = [z, c]
        if return_first_stage_outputs:
            xrec = self.decode_first_stage(z)
            out.extend([x if x is not None else xrec, xrec])
        if return_original_cond:
            out.append(xc)
        return out

    def batch_size_of(self, batch: Mapping[str, Any]) -> int | None:
        value = batch.get(self.cached_latent_key, batch.get(self.first_stage_key))
        return len(value) if value is not None else None

    def shared_step(self, batch: Mapping[str, Any], **kwargs: Any) -> tuple[Tensor, dict]:
        x, c = self.get_input(batch, self.first_stage_key)
        return self(x, c)

    def forward(self, x: Tensor, c: Any, *args: Any, **kwargs: Any) -> tuple[Tensor, dict]:
        t = self.sample_timesteps(x.shape[0])
        if self.model.conditioning_key is not None:
            if c is None:
                raise ValueError("this model is conditional but got no condition")
            if self.cond_stage_trainable:
                c = self.get_learned_conditioning(c)
            if self.shorten_cond_schedule:
                tc = self.cond_ids[t.cpu()].to(self.device)
                c = self.q_sample(x_start=c, t=tc, noise=torch.randn_like(c.float()))
        return self.p_losses(x, c, t, *args, **kwargs)

    def apply_model(self, x_noisy: Tensor, t: Tensor, cond: Any = None, return_ids: bool = False) -> Tensor:
        """The network's output; with `split_input_params` it runs on overlapping latent crops."""
        if getattr(self, "split_input_params", None) is None:
            return super().apply_model(x_noisy, t, cond, return_ids)
        if return_ids:
            raise ValueError("return_ids is not supported with split_input_params")
        if self.cond_stage_key == "coordinates_bbox":
            raise NotImplementedError("patch-wise denoising of layout conditions is not supported")
        if not isinstance(cond, dict):
            key = "c_concat" if self.model.conditioning_key == "concat" else "c_crossattn"
            cond = {key: cond if isinstance(cond, list) else [cond]}
        params = self.split_input_params
        # Spatial conditions are cut like x; cross-attention contexts go to every crop whole.
        spatial = {k: [patches.crops_of(c, params) for c in v] for k, v in cond.items() if k == "c_concat"}

        def denoise(crop: Tensor, i: int) -> Tensor:
            crop_cond = {k: ([crops[i] for crops in spatial[k]] if k in spatial else v) for k, v in cond.items()}
            if self.model.conditioning_key is None:
                return self.model(crop, t)
            return self.model(crop, t, **crop_cond)

        return patches.patchwise(denoise, x_noisy, params)

    # ---- optimizer, sampling, logging ---------------------------------------------------------

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = list(self.model.parameters())
        if self.cond_stage_trainable:
            logger.info("%s: also optimizing the condition encoder's parameters", type(self).__name__)
            params += list(self.cond_stage_model.parameters())
        if self.learn_logvar:
            params.append(self.logvar)
        return params

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """The network's parameters at `lr`; with `cond_stage_lr_scale` != 1 the condition
        encoder's in a group of their own at `lr * cond_stage_lr_scale`."""
        if self.cond_stage_lr_scale == 1.0:
            return super().optimizer_groups(lr)
        encoder = {id(p) for p in self.cond_stage_model.parameters()}
        params = self.trainable_parameters()
        return [{"params": [p for p in params if id(p) not in encoder], "lr": lr},
                {"params": [p for p in params if id(p) in encoder], "lr": lr * self.cond_stage_lr_scale}]

    @torch.no_grad()
    def sample_log(self, cond: Any, batch_size: int, ddim: bool, ddim_steps: int, **kwargs: Any):
        """(samples, intermediates) by DDIM (`ddim` True) or the ancestral sampler."""
        if ddim:
            from ldm.models.diffusion.ddim import DDIMSampler
            shape = (self.channels, self.image_size, self.image_size)
            if "quantize_denoised" in kwargs:  # the DDIM sampler's name for it
                kwargs["quantize_x0"] = kwargs.pop("quantize_denoised")
            return DDIMSampler(self).sample(ddim_steps, batch_size, shape, cond, verbose=False, **kwargs)
        return self.sample(cond=cond, batch_size=batch_size, return_intermediates=True, verbose=False, **kwargs)

    @torch.no_grad()
    def log_images(self, batch: Mapping[str, Any], N: int = 8, n_row: int = 4, **kwargs: Any) -> dict[str, Tensor]:
        """See `latent_logging.log_latent_images` for what is logged and the options."""
        return log_latent_images(self, batch, N=N, n_row=n_row, **kwargs)

    @torch.no_grad()
    def to_rgb(self, x: Tensor) -> Tensor:
        from ldm.models.diffusion.image_logging import to_rgb
        if not hasattr(self, "colorize"):
            self.colorize = torch.randn(3, x.shape[1], 1, 1).to(x)
        return to_rgb(x, self.colorize)
