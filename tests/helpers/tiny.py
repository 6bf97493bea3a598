"""A tiny LightningModule and data set for driving `main.py` end to end in tests.

Not part of the package: configs in tests name `tests.helpers.tiny.TinyModel`.
"""
from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset


class TinyImages(Dataset):
    """`n` seeded random images {'image': HWC float32 in [-1, 1]}."""

    def __init__(self, n: int = 16, size: int = 8, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.images = rng.uniform(-1, 1, size=(n, size, size, 3)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i]}


class TinyModel(pl.LightningModule):
    """A 2-layer conv autoencoder with the hooks main.py relies on (log_images, monitor)."""

    def __init__(self, channels: int = 4, monitor: str | None = None, fail_at_step: int = -1):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.SiLU(), nn.Conv2d(channels, 3, 3, padding=1))
        self.learning_rate = 1e-3
        self.fail_at_step = fail_at_step
        if monitor:
            self.monitor = monitor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, batch: dict) -> torch.Tensor:
        x = batch["image"].permute(0, 3, 1, 2)
        return (self(x) - x).pow(2).mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.global_step == self.fail_at_step:
            raise RuntimeError("tiny model: planned failure")
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch), sync_dist=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.log("test/loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)

    @torch.no_grad()
    def log_images(self, batch: dict, split: str = "train", **kwargs) -> dict:
        x = batch["image"].permute(0, 3, 1, 2)
        return {"inputs": x, "reconstructions": self(x)}
