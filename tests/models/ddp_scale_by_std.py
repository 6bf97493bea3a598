"""Run by `test_ddp.py`: 2-process CPU DDP of a tiny scale_by_std LatentDiffusion.

Each rank writes `<out>/rank<r>.json` with its scale factor right after `on_train_batch_start`
and a checksum of its first batch (the ranks see different data and only rank 0 estimates, so
only the broadcast makes their factors agree).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ldm.models.diffusion.ddpm import LatentDiffusion
from tests.models.tiny import BlobImages, unconditional_kl_params


class Recording(LatentDiffusion):
    """Records the factor right after the hook, before DDP's forward could sync buffers."""

    out: Path

    def on_train_batch_start(self, batch, batch_idx):
        super().on_train_batch_start(batch, batch_idx)
        if batch_idx == 0:
            record = {"scale_factor": self.scale_factor.item(), "batch_sum": batch["image"].sum().item(),
                      "world_size": self.trainer.world_size}
            (self.out / f"rank{self.trainer.global_rank}.json").write_text(json.dumps(record))


def main(out: str) -> None:
    torch.set_num_threads(1)
    pl.seed_everything(0)
    model = Recording(**unconditional_kl_params(scale_by_std=True, scale_factor=1.0, use_ema=False))
    model.out = Path(out)
    model.learning_rate = 1e-4
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(BlobImages(length=16), batch_size=4))


if __name__ == "__main__":
    main(sys.argv[1])
