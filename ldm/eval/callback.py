"""`FIDCallback`: FID on a small sample set every N training steps, logged like any metric.

Samples come from the model's `log_images(batch, N=..., sample=True, ...)` hook (key
`"samples"`, images in [-1, 1]) run on batches of the validation data loader, so conditional
models are sampled with real conditions. The reference statistics are computed once, from the
validation images (the model's `first_stage_key`, default `"image"`) or from a given reference
(folder, `.npz`, statistics file or data-set config). A few hundred samples give a biased but
trend-worthy FID; the paper's protocol is `scripts/evaluate.py` with a preset.
"""
from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException

from ldm.eval.features import FeatureExtractor, build_feature_extractor, extract_features
from ldm.eval.fid import FeatureStats, fid_from_stats
from ldm.eval.images import to_uint8_chw

logger = logging.getLogger(__name__)


def _to_uint8_batch(images: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] or [B, H, W, C] floats in [-1, 1] -> uint8 [B, 3, H, W]."""
    return torch.stack([to_uint8_chw(image.detach().float().clamp(-1, 1), (-1.0, 1.0))
                        for image in images])


class FIDCallback(pl.Callback):
    """Computes FID between model samples and reference images every `every_n_steps` steps."""

    def __init__(self, every_n_steps: int = 5000, num_samples: int = 500, reference: Any = None,
                 feature_extractor: str | FeatureExtractor = "inception-v3-compat",
                 inception_weights: str | None = None, log_key: str = "val/fid",
                 sample_kwargs: dict | None = None, samples_key: str = "samples",
                 num_reference: int | None = None, batch_size: int = 50,
                 sample_fn: Callable[[pl.LightningModule, Any], torch.Tensor] | None = None) -> None:
        """
        every_n_steps: global-step interval between evaluations.
        num_samples: samples generated per evaluation (and reference images used by default).
        reference: folder / .npz / statistics file / data-set config; None uses validation images.
        feature_extractor: registered name, import path or instance ("pixels" for smoke tests).
        inception_weights: local FID Inception weight file (else the cache / download).
        log_key: name of the logged metric.
        sample_kwargs: extra keyword arguments for `log_images` (e.g. ddim_steps, ddim_eta).
        samples_key: key of the samples in the dict `log_images` returns.
        num_reference: reference images to use (default: num_samples).
        batch_size: batch size of the feature extractor.
        sample_fn: optional `(pl_module, batch) -> images in [-1, 1]` replacing `log_images`.
        """
        super().__init__()
        if every_n_steps < 1 or num_samples < 2:
            raise ValueError("every_n_steps must be >= 1 and num_samples >= 2")
        self.every_n_steps, self.num_samples = every_n_steps, num_samples
        self.reference, self.num_reference = reference, num_reference or num_samples
        self._extractor_spec, self.inception_weights = feature_extractor, inception_weights
        self.log_key, self.samples_key, self.batch_size = log_key, samples_key, batch_size
        # only the samples: the demo rows of log_images (inpainting, progressive and diffusion
        # rows, quantized samples) would multiply the sampling cost
        self.sample_kwargs = {"sample": True, "ddim_steps": 50, "ddim_eta": 1.0,
                              "quantize_denoised": False, "inpaint": False,
                              "plot_denoise_rows": False, "plot_progressive_rows": False,
                              "plot_diffusion_rows": False, **(sample_kwargs or {})}
        self.sample_fn = sample_fn
        self._extractor: FeatureExtractor | None = None
        self._reference_stats: FeatureStats | None = None
        self._last_step = -1  # with gradient accumulation a step spans several batches

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            spec = self._extractor_spec
            if isinstance(spec, FeatureExtractor):
                self._extractor = spec
            elif spec in ("inception", "inception-v3-compat"):
                self._extractor = build_feature_extractor(spec, weights_path=self.inception_weights)
            else:
                self._extractor = build_feature_extractor(spec)
        return self._extractor

    @staticmethod
    def _loader(trainer: pl.Trainer, pl_module: pl.LightningModule):
        """The validation loader (datamodule, trainer or model), else the training loader."""
        for owner in (getattr(trainer, "datamodule", None), pl_module):
            make = getattr(owner, "val_dataloader", None) if owner is not None else None
            if make is not None:
                try:
                    loader = make()
                except (NotImplementedError, AttributeError, KeyError, TypeError, MisconfigurationException):
                    continue
                if loader is not None:
                    return loader[0] if isinstance(loader, (list, tuple)) else loader
        loader = trainer.val_dataloaders if trainer.val_dataloaders is not None else trainer.train_dataloader
        if isinstance(loader, (list, tuple)):
            loader = loader[0] if loader else None
        if loader is None:
            raise RuntimeError("FIDCallback needs a validation (or training) data loader")
        return loader

    def _batches(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Iterator[Any]:
        while True:  # cycle: the validation set may be smaller than num_samples
            empty = True
            for batch in self._loader(trainer, pl_module):
                empty = False
                yield batch
            if empty:
                raise RuntimeError("FIDCallback: the data loader is empty")

    def _sample(self, pl_module: pl.LightningModule, batch: Any, n: int) -> torch.Tensor:
        if self.sample_fn is not None:
            return self.sample_fn(pl_module, batch)
        kwargs = dict(self.sample_kwargs)
        signature = inspect.signature(pl_module.log_images)
        if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in signature.parameters}
        log = pl_module.log_images(batch, N=n, **kwargs)
        if self.samples_key not in log:
            raise KeyError(f"log_images returned no '{self.samples_key}' (keys: {', '.join(log)})")
        return log[self.samples_key]

    def _image_batches(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                       total: int, generate: bool) -> Iterator[torch.Tensor]:
        key = getattr(pl_module, "first_stage_key", "image")
        produced = 0
        for batch in self._batches(trainer, pl_module):
            if produced >= total:
                return
            if generate:
                size = len(batch[key]) if isinstance(batch, dict) and key in batch else self.batch_size
                images = self._sample(pl_module, batch, min(size, total - produced))
            else:
                images = batch[key] if isinstance(batch, dict) else batch[0]
            images = _to_uint8_batch(images[: total - produced])
            produced += len(images)
            yield images

    def _stats(self, batches: Iterator[torch.Tensor], device: torch.device) -> FeatureStats:
        out = extract_features(batches, self.extractor, device)
        # features are kept: with fewer samples than dimensions FID uses them for a fast exact path
        return FeatureStats.from_features(out["features"], None, self.extractor.name)

    def reference_stats(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> FeatureStats:
        """Statistics of the reference images, computed on first use."""
        if self._reference_stats is None:
            if self.reference is not None:
                from ldm.eval.runner import EvalConfig, _Evaluation, _open

                config = EvalConfig(device=str(pl_module.device), batch_size=self.batch_size)
                side = _open(self.reference, config)
                self._reference_stats = _Evaluation(config, self.extractor).stats(
                    side, self.num_reference, False, False, "reference")
            else:
                batches = self._image_batches(trainer, pl_module, self.num_reference, generate=False)
                self._reference_stats = self._stats(batches, pl_module.device)
        return self._reference_stats

    @torch.no_grad()
    def compute_fid(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> float:
        """Sample `num_samples` images and return their FID against the reference."""
        reference = self.reference_stats(trainer, pl_module)
        was_training = pl_module.training
        pl_module.eval()
        try:
            batches = self._image_batches(trainer, pl_module, self.num_samples, generate=True)
            samples = self._stats(batches, pl_module.device)
        finally:
            pl_module.train(was_training)
        return fid_from_stats(samples, reference)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps != 0 or step == self._last_step:
            return
        self._last_step = step
        if not trainer.is_global_zero:
            return
        start = time.perf_counter()
        fid = self.compute_fid(trainer, pl_module)
        logger.info("step %d: %s = %.4f (%d samples, %.1fs)", step, self.log_key, fid,
                    self.num_samples, time.perf_counter() - start)
        # straight to the loggers: `self.log` would hold the value back until the next
        # `log_every_n_steps` boundary, which an evaluation interval rarely hits
        for experiment_logger in trainer.loggers:
            experiment_logger.log_metrics({self.log_key: fid}, step=step)
        trainer.callback_metrics[self.log_key] = torch.tensor(fid)  # e.g. ModelCheckpoint(monitor=)
