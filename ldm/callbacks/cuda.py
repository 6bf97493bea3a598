"""`CUDACallback`: logs peak GPU memory and wall time per training epoch (CUDA runs only)."""
from __future__ import annotations

import logging
import time

import lightning.pytorch as pl
import torch

logger = logging.getLogger(__name__)


class CUDACallback(pl.Callback):
    """Log `train/epoch_time_s` and `train/peak_memory_MiB` at the end of each epoch."""

    def _active(self, trainer: pl.Trainer) -> bool:
        return torch.cuda.is_available() and trainer.strategy.root_device.type == "cuda"

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active(trainer):
            device = trainer.strategy.root_device
            torch.cuda.reset_peak_memory_stats(device)
            torch.cuda.synchronize(device)
        self.start_time = time.time()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active(trainer):
            return
        device = trainer.strategy.root_device
        torch.cuda.synchronize(device)
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
        epoch_time = time.time() - self.start_time
        epoch_time = trainer.strategy.reduce(torch.tensor(epoch_time, device=device), reduce_op="mean").item()
        peak_mib = trainer.strategy.reduce(torch.tensor(peak_mib, device=device), reduce_op="max").item()
        pl_module.log_dict({"train/epoch_time_s": epoch_time, "train/peak_memory_MiB": peak_mib},
                           rank_zero_only=True)
        logger.info("epoch time %.2f s, peak memory %.1f MiB", epoch_time, peak_mib)
