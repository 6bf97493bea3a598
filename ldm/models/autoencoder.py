"""First-stage autoencoders (LDM paper, Sec. 3.1): `AutoencoderKL`, `VQModel`,
`VQModelInterface`, `IdentityFirstStage`.

Same constructor parameters and state-dict layout as the released models. Training is a GAN
game between the autoencoder (optimizer 0) and the PatchGAN inside `self.loss` (optimizer 1).
Lightning 2 has no multi-optimizer automatic optimization, so `_GANAutoencoder.training_step`
does it by hand: per batch, one forward pass, an autoencoder update, then a discriminator
update on the detached reconstruction (the original re-ran the forward pass for the second
optimizer). Gradient accumulation and clipping are constructor arguments of the model
(`accumulate_grad_batches`, `gradient_clip_val`): Lightning refuses the Trainer's own
settings under manual optimization.

Step counting: Lightning's `global_step` counts the steps of *both* optimizers, so the
adversarial warm-up (`disc_start`) uses `loss_step = global_step // 2`, the number of
autoencoder updates, which is what `global_step` meant in the original (Lightning 1.x).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ldm.checkpoint import load_checkpoint, load_state_dict_into
from ldm.modules.diffusionmodules.model import Decoder, Encoder
from ldm.modules.distributions.distributions import DiagonalGaussianDistribution
from ldm.modules.ema import LitEma
from ldm.modules.vqvae.quantize import VectorQuantizer2
from ldm.optim import build_adam
from ldm.util import instantiate_from_config

logger = logging.getLogger(__name__)


class _GANAutoencoder(pl.LightningModule):
    """Training machinery shared by AutoencoderKL and VQModel (see the module docstring).

    Subclasses build their modules, then call `_init_training`, and implement
    `_reconstruct(x) -> (xrec, aux)`, `_loss(aux, x, xrec, optimizer_idx, step, split)` and
    `_autoencoder_parameters()`.
    """

    def _init_training(self, *, image_key: str, colorize_nlabels: int | None, monitor: str | None,
                       batch_resize_range: Sequence[int] | None, scheduler_config: Any,
                       lr_g_factor: float, use_ema: bool, ema_decay: float,
                       accumulate_grad_batches: int, gradient_clip_val: float | None,
                       gradient_clip_algorithm: str, ckpt_path: str | None,
                       ignore_keys: Sequence[str]) -> None:
        self.automatic_optimization = False
        self.image_key = image_key
        if colorize_nlabels is not None:
            if not isinstance(colorize_nlabels, int):
                raise TypeError(f"colorize_nlabels must be an int, got {colorize_nlabels!r}")
            self.register_buffer("colorize", torch.randn(3, colorize_nlabels, 1, 1))
        if monitor is not None:
            self.monitor = monitor
        self.batch_resize_range = batch_resize_range
        if batch_resize_range is not None:
            logger.info("%s: using per-batch resizing in range %s.", type(self).__name__, batch_resize_range)
        self.scheduler_config = scheduler_config
        self.lr_g_factor = lr_g_factor
        self.accumulate_grad_batches = int(accumulate_grad_batches)
        if self.accumulate_grad_batches < 1:
            raise ValueError(f"accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}")
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm
        self.learning_rate: float | None = None  # set by main.py from base_learning_rate
        self.ema_decay = ema_decay
        self.use_ema = use_ema
        if use_ema:
            self.model_ema = LitEma(self, decay=ema_decay)
            logger.info("Keeping EMAs of %d tensors.", len(list(self.model_ema.buffers())))
        if ckpt_path is not None:
            self.init_from_ckpt(ckpt_path, ignore_keys=list(ignore_keys))

    # ---- loading, EMA -------------------------------------------------------------------------

    def init_from_ckpt(self, path: str | Path, ignore_keys: Sequence[str] = ()) -> None:
        """Load weights from `path` (safe reading, strict key check: `ldm.checkpoint`),
        dropping keys that start with any of `ignore_keys`.

        Training-only keys (`loss.*`) may be absent or extra; a file without `model_ema.*`
        starts the EMA at the loaded weights. Other mismatches raise a CheckpointError naming
        the keys.
        """
        report = load_state_dict_into(self, load_checkpoint(path), ignore_keys=ignore_keys, source=str(path))
        logger.info("Restored from %s (%d tensors)", path, report.loaded)

    @contextmanager
    def ema_scope(self, context: str | None = None) -> Iterator[None]:
        """Run the block with the EMA weights (no-op without `use_ema`)."""
        if self.use_ema:
            self.model_ema.store(self.parameters())
            self.model_ema.copy_to(self)
            if context is not None:
                logger.info("%s: Switched to EMA weights", context)
        try:
            yield None
        finally:
            if self.use_ema:
                self.model_ema.restore(self.parameters())
                if context is not None:
                    logger.info("%s: Restored training weights", context)

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        if self.use_ema:
            self.model_ema(self)

    # ---- data -----------------------------------------------------------------------------------

    def get_input(self, batch: dict[str, Tensor], k: str) -> Tensor:
        """batch[k] as [B, H, W, C] (data-set layout) -> float [B, C, H, W]."""
        x = batch[k]
        if x.ndim == 3:
            x = x[..., None]
        channels = self.encoder.in_channels
        if x.ndim != 4 or x.shape[-1] != channels:
            hint = (" (it looks channels-first; data sets yield [B, H, W, C])"
                    if x.ndim == 4 and x.shape[1] == channels else "")
            raise ValueError(f"batch[{k!r}]: expected images of shape [B, H, W, {channels}], "
                             f"got {list(x.shape)}{hint}")
        x = x.permute(0, 3, 1, 2).to(memory_format=torch.contiguous_format).float()
        if self.batch_resize_range is not None:
            lower, upper = self.batch_resize_range
            if self.global_step <= 4:  # the first batches at the largest size, to hit OOM early
                new_size = upper
            else:
                sizes = list(range(lower, upper + 16, 16))
                new_size = sizes[int(torch.randint(len(sizes), ()).item())]
            if new_size != x.shape[2]:
                x = F.interpolate(x, size=new_size, mode="bicubic")
            x = x.detach()
        return x

    def to_rgb(self, x: Tensor) -> Tensor:
        """Project a segmentation map to 3 channels in [-1, 1] with a fixed random matrix."""
        if self.image_key != "segmentation":
            raise ValueError(f"to_rgb is for segmentation inputs, image_key is {self.image_key!r}")
        if not hasattr(self, "colorize"):
            self.register_buffer("colorize", torch.randn(3, x.shape[1], 1, 1).to(x))
        x = F.conv2d(x, weight=self.colorize)
        return 2.0 * (x - x.min()) / (x.max() - x.min()) - 1.0

    def get_last_layer(self) -> Tensor:
        """Weight of the decoder's output conv (where the adaptive GAN weight is measured)."""
        return self.decoder.conv_out.weight

    # ---- training -------------------------------------------------------------------------------

    @property
    def loss_step(self) -> int:
        """Number of autoencoder updates so far (Lightning's global_step counts both optimizers)."""
        return self.global_step // 2

    def _optimizer_step(self, opt: Any, index: int) -> None:
        if self.gradient_clip_val:
            self.clip_gradients(opt, gradient_clip_val=self.gradient_clip_val,
                                gradient_clip_algorithm=self.gradient_clip_algorithm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        schedulers = self.lr_schedulers()
        if schedulers is not None:
            schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
            if index < len(schedulers):
                schedulers[index].step()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """One autoencoder update, then one discriminator update (each every
        `accumulate_grad_batches` batches)."""
        opt_ae, opt_disc = self.optimizers()
        n_acc = self.accumulate_grad_batches
        do_step = (batch_idx + 1) % n_acc == 0 or self.trainer.is_last_batch
        step = self.loss_step
        x = self.get_input(batch, self.image_key)

        self.toggle_optimizer(opt_ae)
        xrec, aux = self._reconstruct(x)
        aeloss, log_ae = self._loss(aux, x, xrec, 0, step, "train")
        self.manual_backward(aeloss / n_acc)
        if do_step:
            self._optimizer_step(opt_ae, 0)
        self.untoggle_optimizer(opt_ae)

        self.toggle_optimizer(opt_disc)
        discloss, log_disc = self._loss(aux, x, xrec.detach(), 1, step, "train")
        self.manual_backward(discloss / n_acc)
        if do_step:
            self._optimizer_step(opt_disc, 1)
        self.untoggle_optimizer(opt_disc)

        self.log("aeloss", aeloss.detach(), prog_bar=True, logger=True, on_step=True, on_epoch=True)
        self.log("discloss", discloss.detach(), prog_bar=True, logger=True, on_step=True, on_epoch=True)
        log_ae["train/aeloss"], log_disc["train/discloss"] = aeloss.detach(), discloss.detach()
        self.log_dict({**log_ae, **log_disc, **self._extra_train_logs(aux)},
                      prog_bar=False, logger=True, on_step=True, on_epoch=False)

    def _extra_train_logs(self, aux: Any) -> dict[str, Tensor]:
        return {}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Losses on the validation batch (`val/...`), and with the EMA weights (`val_ema/...`)."""
        log = self._validation_step(batch, batch_idx)
        if self.use_ema:
            with self.ema_scope():
                self._validation_step(batch, batch_idx, suffix="_ema")
        return log

    def _validation_step(self, batch: dict[str, Tensor], batch_idx: int, suffix: str = "") -> dict[str, Tensor]:
        split = "val" + suffix
        x = self.get_input(batch, self.image_key)
        xrec, aux = self._reconstruct(x)
        aeloss, log_ae = self._loss(aux, x, xrec, 0, self.loss_step, split)
        _, log_disc = self._loss(aux, x, xrec, 1, self.loss_step, split)
        rec_loss = log_ae.pop(f"{split}/rec_loss")
        self.log(f"{split}/rec_loss", rec_loss, prog_bar=True, logger=True, on_step=False,
                 on_epoch=True, sync_dist=True)
        self.log(f"{split}/aeloss", aeloss, prog_bar=True, logger=True, on_step=False,
                 on_epoch=True, sync_dist=True)
        self.log_dict({**log_ae, **log_disc}, sync_dist=True)
        return {f"{split}/rec_loss": rec_loss, **log_ae, **log_disc}

    def _autoencoder_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def configure_optimizers(self) -> Any:
        """Adam(betas 0.5, 0.9) for the autoencoder (lr * lr_g_factor) and the discriminator (lr)."""
        if self.learning_rate is None:
            raise RuntimeError(f"{type(self).__name__}.learning_rate is not set (main.py sets it from "
                               "model.base_learning_rate; set it yourself when training without main.py)")
        if not hasattr(self.loss, "discriminator"):
            raise RuntimeError(f"{type(self).__name__}: the lossconfig ({type(self.loss).__name__}) has no "
                               "discriminator; training needs LPIPSWithDiscriminator / VQLPIPSWithDiscriminator")
        lr_d, lr_g = self.learning_rate, self.lr_g_factor * self.learning_rate
        logger.info("lr_d %g, lr_g %g", lr_d, lr_g)
        opt_ae = build_adam(torch.optim.Adam, self._autoencoder_parameters(), lr=lr_g, betas=(0.5, 0.9))
        opt_disc = build_adam(torch.optim.Adam, self.loss.discriminator.parameters(), lr=lr_d, betas=(0.5, 0.9))
        if self.scheduler_config is None:
            return [opt_ae, opt_disc]
        schedule = instantiate_from_config(self.scheduler_config)
        logger.info("Setting up LambdaLR scheduler...")
        schedulers = [{"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=schedule.schedule),
                       "interval": "step", "frequency": 1} for opt in (opt_ae, opt_disc)]
        return [opt_ae, opt_disc], schedulers

    def _image_for_log(self, x: Tensor) -> Tensor:
        return self.to_rgb(x) if x.shape[1] > 3 else x


class AutoencoderKL(_GANAutoencoder):
    """KL-regularised autoencoder: image -> DiagonalGaussianDistribution over [B, embed_dim, H/f, W/f].

    Args:
        ddconfig: Encoder/Decoder parameters (`double_z` must be True).
        lossconfig: training loss (`ldm.modules.losses.LPIPSWithDiscriminator`), or e.g.
            `torch.nn.Identity` for inference only.
        embed_dim: latent channels.
        ckpt_path: checkpoint to load after construction; `ignore_keys`: key prefixes to drop.
        image_key: key of the images in the batch dict.
        colorize_nlabels: for segmentation inputs, the number of labels (random RGB projection).
        monitor: metric name for checkpointing (read by main.py).
        use_ema, ema_decay: keep an EMA of the weights (LitEma), used for `val_ema/*`.
        learn_logvar: also optimize the loss's `logvar` (the original never did: False).
        batch_resize_range, scheduler_config, lr_g_factor, accumulate_grad_batches,
        gradient_clip_val, gradient_clip_algorithm: see `VQModel`.
    """

    def __init__(self, ddconfig: dict, lossconfig: dict, embed_dim: int, ckpt_path: str | None = None,
                 ignore_keys: Sequence[str] = (), image_key: str = "image", colorize_nlabels: int | None = None,
                 monitor: str | None = None, use_ema: bool = False, ema_decay: float = 0.9999,
                 learn_logvar: bool = False, batch_resize_range: Sequence[int] | None = None,
                 scheduler_config: dict | None = None, lr_g_factor: float = 1.0,
                 accumulate_grad_batches: int = 1, gradient_clip_val: float | None = None,
                 gradient_clip_algorithm: str = "norm"):
        super().__init__()
        if not ddconfig.get("double_z", True):
            raise ValueError("AutoencoderKL needs ddconfig.double_z: true (mean and log-variance)")
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.loss = instantiate_from_config(lossconfig)
        self.quant_conv = nn.Conv2d(2 * ddconfig["z_channels"], 2 * embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
        self.embed_dim = embed_dim
        self.learn_logvar = learn_logvar
        self._init_training(image_key=image_key, colorize_nlabels=colorize_nlabels, monitor=monitor,
                            batch_resize_range=batch_resize_range, scheduler_config=scheduler_config,
                            lr_g_factor=lr_g_factor, use_ema=use_ema, ema_decay=ema_decay,
                            accumulate_grad_batches=accumulate_grad_batches,
                            gradient_clip_val=gradient_clip_val,
                            gradient_clip_algorithm=gradient_clip_algorithm, ckpt_path=ckpt_path,
                            ignore_keys=ignore_keys)

    def encode(self, x: Tensor) -> DiagonalGaussianDistribution:
        """Images [B, C, H, W] in [-1, 1] -> posterior over latents [B, embed_dim, H/f, W/f]."""
        return DiagonalGaussianDistribution(self.quant_conv(self.encoder(x)))

    def decode(self, z: Tensor) -> Tensor:
        """Latents [B, embed_dim, h, w] -> images [B, out_ch, h*f, w*f]."""
        if z.ndim != 4 or z.shape[1] != self.embed_dim:
            raise ValueError(f"expected latents of shape [B, {self.embed_dim}, h, w], got {list(z.shape)}")
        return self.decoder(self.post_quant_conv(z))

    def forward(self, input: Tensor, sample_posterior: bool = True) -> tuple[Tensor, DiagonalGaussianDistribution]:
        """(reconstruction, posterior); decodes a posterior sample, or its mode."""
        posterior = self.encode(input)
        z = posterior.sample() if sample_posterior else posterior.mode()
        return self.decode(z), posterior

    def _reconstruct(self, x: Tensor) -> tuple[Tensor, DiagonalGaussianDistribution]:
        return self(x)

    def _loss(self, posterior, x, xrec, optimizer_idx, step, split):
        return self.loss(x, xrec, posterior, optimizer_idx, step,
                         last_layer=self.get_last_layer(), split=split)

    def _autoencoder_parameters(self) -> list[nn.Parameter]:
        params = [*self.encoder.parameters(), *self.decoder.parameters(),
                  *self.quant_conv.parameters(), *self.post_quant_conv.parameters()]
        if self.learn_logvar:
            params.append(self.loss.logvar)
        return params

    @torch.no_grad()
    def log_images(self, batch: dict[str, Tensor], only_inputs: bool = False, **kwargs: Any) -> dict[str, Tensor]:
        """`inputs`, `reconstructions` and `samples` (decoded N(0, I) latents), [B, 3, H, W]."""
        log: dict[str, Tensor] = {}
        x = self.get_input(batch, self.image_key).to(self.device)
        if not only_inputs:
            xrec, posterior = self(x)
            log["samples"] = self._image_for_log(self.decode(torch.randn_like(posterior.mean)))
            log["reconstructions"] = self._image_for_log(xrec)
        log["inputs"] = self._image_for_log(x)
        return log


class VQModel(_GANAutoencoder):
    """Vector-quantised autoencoder (VQGAN first stage).

    Args:
        ddconfig: Encoder/Decoder parameters (`double_z: false`).
        lossconfig: training loss (`VQLPIPSWithDiscriminator`), or `torch.nn.Identity`.
        n_embed: codebook size.
        embed_dim: codebook entry dimension (latent channels).
        ckpt_path: checkpoint to load after construction; `ignore_keys`: key prefixes to drop.
        image_key: key of the images in the batch dict.
        colorize_nlabels: for segmentation inputs, the number of labels.
        monitor: metric name for checkpointing.
        batch_resize_range: (min, max) image size; each training batch is resized (bicubic) to a
            random multiple of 16 in that range (the first 5 steps use max).
        scheduler_config: config of an object with a `schedule(step)` method, used as LambdaLR
            factor for both optimizers (e.g. `ldm.lr_scheduler.LambdaLinearScheduler`).
        lr_g_factor: autoencoder learning rate = lr_g_factor * learning_rate.
        remap, sane_index_shape: passed to the quantizer.
        use_ema, ema_decay: keep an EMA of the weights (LitEma), used for `val_ema/*`.
        accumulate_grad_batches: batches per optimizer step.
        gradient_clip_val, gradient_clip_algorithm: clip gradients ("norm" or "value") before
            each optimizer step.
    """

    def __init__(self, ddconfig: dict, lossconfig: dict, n_embed: int, embed_dim: int,
                 ckpt_path: str | None = None, ignore_keys: Sequence[str] = (), image_key: str = "image",
                 colorize_nlabels: int | None = None, monitor: str | None = None,
                 batch_resize_range: Sequence[int] | None = None, scheduler_config: dict | None = None,
                 lr_g_factor: float = 1.0, remap: str | None = None, sane_index_shape: bool = False,
                 use_ema: bool = False, ema_decay: float = 0.9999, accumulate_grad_batches: int = 1,
                 gradient_clip_val: float | None = None, gradient_clip_algorithm: str = "norm"):
        super().__init__()
        self.embed_dim = embed_dim
        self.n_embed = n_embed
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.loss = instantiate_from_config(lossconfig)
        self.quantize = VectorQuantizer2(n_embed, embed_dim, beta=0.25, remap=remap,
                                         sane_index_shape=sane_index_shape)
        self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
        self._init_training(image_key=image_key, colorize_nlabels=colorize_nlabels, monitor=monitor,
                            batch_resize_range=batch_resize_range, scheduler_config=scheduler_config,
                            lr_g_factor=lr_g_factor, use_ema=use_ema, ema_decay=ema_decay,
                            accumulate_grad_batches=accumulate_grad_batches,
                            gradient_clip_val=gradient_clip_val,
                            gradient_clip_algorithm=gradient_clip_algorithm, ckpt_path=ckpt_path,
                            ignore_keys=ignore_keys)

    def encode_to_prequant(self, x: Tensor) -> Tensor:
        """Images -> continuous latents before quantization [B, embed_dim, H/f, W/f]."""
        return self.quant_conv(self.encoder(x))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[Any, Any, Tensor]]:
        """Images -> (quantized latents, codebook loss, (perplexity, None, indices))."""
        return self.quantize(self.encode_to_prequant(x))

    def decode(self, quant: Tensor) -> Tensor:
        """Quantized latents [B, embed_dim, h, w] -> images."""
        return self._decode_quant(quant)

    def _decode_quant(self, quant: Tensor) -> Tensor:
        if quant.ndim != 4 or quant.shape[1] != self.embed_dim:
            raise ValueError(f"expected latents of shape [B, {self.embed_dim}, h, w], got {list(quant.shape)}")
        return self.decoder(self.post_quant_conv(quant))

    def decode_code(self, code_b: Tensor) -> Tensor:
        """Code indices [B, h, w] -> images (the original called a method taming never had)."""
        b, h, w = code_b.shape
        quant = self.quantize.get_codebook_entry(code_b.reshape(-1), (b, h, w, self.embed_dim))
        return self._decode_quant(quant)

    def forward(self, input: Tensor, return_pred_indices: bool = False):
        """(reconstruction, codebook loss[, indices]): encode, quantize, decode."""
        quant, diff, (_, _, ind) = self.quantize(self.encode_to_prequant(input))
        dec = self._decode_quant(quant)
        return (dec, diff, ind) if return_pred_indices else (dec, diff)

    def _reconstruct(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        quant, qloss, (perplexity, _, ind) = self.quantize(self.encode_to_prequant(x))
        return self._decode_quant(quant), (qloss, ind, perplexity)

    def _loss(self, aux, x, xrec, optimizer_idx, step, split):
        qloss, ind, _ = aux
        return self.loss(qloss, x, xrec, optimizer_idx, step, last_layer=self.get_last_layer(),
                         split=split, predicted_indices=ind)

    def _extra_train_logs(self, aux: Any) -> dict[str, Tensor]:
        return {"train/perplexity": aux[2]}

    def on_train_epoch_start(self) -> None:
        self.quantize.reset_usage()

    def on_train_epoch_end(self) -> None:
        usage = self.quantize.usage()
        self.log_dict({"train/codebook_usage": usage["codebook_usage"],
                       "train/codebook_perplexity": usage["perplexity"]}, sync_dist=True)

    def _autoencoder_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.decoder.parameters(), *self.quantize.parameters(),
                *self.quant_conv.parameters(), *self.post_quant_conv.parameters()]

    @torch.no_grad()
    def log_images(self, batch: dict[str, Tensor], only_inputs: bool = False, plot_ema: bool = False,
                   **kwargs: Any) -> dict[str, Tensor]:
        """`inputs`, `reconstructions` (and `reconstructions_ema` with `plot_ema`), [B, 3, H, W]."""
        log: dict[str, Tensor] = {}
        x = self.get_input(batch, self.image_key).to(self.device)
        log["inputs"] = self._image_for_log(x)
        if only_inputs:
            return log
        log["reconstructions"] = self._image_for_log(self(x)[0])
        if plot_ema and self.use_ema:
            with self.ema_scope():
                log["reconstructions_ema"] = self._image_for_log(self(x)[0])
        return log


class VQModelInterface(VQModel):
    """VQModel as the LDMs use it: `encode` returns the *unquantized* latents, `decode`
    quantizes first (unless `force_not_quantize`)."""

    def __init__(self, embed_dim: int, *args: Any, **kwargs: Any):
        super().__init__(*args, embed_dim=embed_dim, **kwargs)
        self.embed_dim = embed_dim

    def encode(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.encode_to_prequant(x)

    def decode(self, h: Tensor, force_not_quantize: bool = False) -> Tensor:
        quant = h if force_not_quantize else self.quantize(h)[0]
        return self._decode_quant(quant)


class IdentityFirstStage(nn.Module):
    """A first stage that does nothing (diffusion directly in pixel space).

    Args:
        vq_interface: make `quantize` return the VQ tuple `(x, None, [None, None, None])`.
    """

    def __init__(self, *args: Any, vq_interface: bool = False, **kwargs: Any):
        super().__init__()
        self.vq_interface = vq_interface

    def encode(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return x

    def decode(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return x

    def quantize(self, x: Tensor, *args: Any, **kwargs: Any):
        if self.vq_interface:
            return x, None, [None, None, None]
        return x

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return x
