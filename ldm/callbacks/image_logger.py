"""`ImageLogger`: calls the model's `log_images` and writes PNG grids (the original's callback).

Released configs name it `main.ImageLogger`. Grids go to `<logdir>/images/{train,val}/` as
`<key>_gs-<step>_e-<epoch>_b-<batch>.png`, and to TensorBoard / W&B when those loggers are used.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only

from ldm.image_grid import make_grid, save_image

logger = logging.getLogger(__name__)


class ImageLogger(pl.Callback):
    """Log `pl_module.log_images(batch, split=...)` every `batch_frequency` steps.

    Args:
        batch_frequency: log every this many global steps (or batches, see `log_on_batch_idx`).
        max_images: at most this many images per key.
        clamp: clamp images to [-1, 1] before writing.
        increase_log_steps: also log at steps 1, 2, 4, ... below `batch_frequency`.
        rescale: images are in [-1, 1] (mapped to [0, 1] for writing).
        disabled: turn the callback off.
        log_on_batch_idx: count by batch index within the epoch instead of global step.
        log_first_step: also log at step 0.
        log_images_kwargs: extra keyword arguments for `log_images` (e.g. `ddim_steps`).
    """

    def __init__(self, batch_frequency: int, max_images: int, clamp: bool = True,
                 increase_log_steps: bool = True, rescale: bool = True, disabled: bool = False,
                 log_on_batch_idx: bool = False, log_first_step: bool = False,
                 log_images_kwargs: dict | None = None):
        super().__init__()
        if batch_frequency < 1:
            raise ValueError(f"ImageLogger: batch_frequency must be >= 1, got {batch_frequency}")
        self.batch_freq = batch_frequency
        self.max_images = max_images
        self.clamp = clamp
        self.rescale = rescale
        self.disabled = disabled
        self.log_on_batch_idx = log_on_batch_idx
        self.log_first_step = log_first_step
        self.log_images_kwargs = dict(log_images_kwargs or {})
        self.log_steps = [2**n for n in range(int(np.log2(self.batch_freq)) + 1)] if increase_log_steps else []

    def check_frequency(self, check_idx: int) -> bool:
        """True when `check_idx` is a logging step (each early step is used once)."""
        if (check_idx % self.batch_freq == 0 or check_idx in self.log_steps) and (check_idx > 0 or self.log_first_step):
            if self.log_steps:
                self.log_steps.pop(0)
            return True
        return False

    @rank_zero_only
    def log_local(self, save_dir: str, split: str, images: dict[str, torch.Tensor], global_step: int,
                  current_epoch: int, batch_idx: int) -> list[str]:
        """Write one PNG grid per key; returns the paths written."""
        root = os.path.join(save_dir, "images", split)
        written = []
        for key, value in images.items():
            grid = make_grid(value, nrow=4)
            if self.rescale:
                grid = (grid + 1.0) / 2.0
            name = f"{key}_gs-{global_step:06}_e-{current_epoch:06}_b-{batch_idx:06}.png"
            written.append(str(save_image(grid, os.path.join(root, name))))
        return written

    def _log_to_logger(self, trainer: pl.Trainer, images: dict[str, torch.Tensor], step: int, split: str) -> None:
        experiment = getattr(trainer.logger, "experiment", None)
        for key, value in images.items():
            grid = make_grid(value, nrow=4)
            grid = ((grid + 1.0) / 2.0 if self.rescale else grid).clamp(0, 1)
            tag = f"{split}/{key}"
            if hasattr(experiment, "add_image"):  # TensorBoard
                experiment.add_image(tag, grid, global_step=step)
            elif hasattr(trainer.logger, "log_image"):  # W&B
                trainer.logger.log_image(key=tag, images=[grid.permute(1, 2, 0).numpy()], step=step)

    def log_img(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
                split: str = "train") -> None:
        check_idx = batch_idx if self.log_on_batch_idx else pl_module.global_step
        if not (self.max_images > 0 and callable(getattr(pl_module, "log_images", None))
                and self.check_frequency(check_idx)):
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                images = pl_module.log_images(batch, split=split, **self.log_images_kwargs)
        finally:
            if was_training:
                pl_module.train()
        kept = {}
        for key, value in images.items():
            if not isinstance(value, torch.Tensor):
                continue
            value = value[: self.max_images].detach().float().cpu()
            kept[key] = value.clamp(-1.0, 1.0) if self.clamp else value
        save_dir = trainer.logger.save_dir if trainer.logger is not None and trainer.logger.save_dir else trainer.default_root_dir
        self.log_local(save_dir, split, kept, pl_module.global_step, pl_module.current_epoch, batch_idx)
        if trainer.is_global_zero and trainer.logger is not None:
            self._log_to_logger(trainer, kept, pl_module.global_step, split)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.disabled and (pl_module.global_step > 0 or self.log_first_step):
            self.log_img(trainer, pl_module, batch, batch_idx, split="train")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self.disabled and pl_module.global_step > 0 and not trainer.sanity_checking:
            self.log_img(trainer, pl_module, batch, batch_idx, split="val")
