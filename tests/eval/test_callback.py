"""FIDCallback: FID of model samples every N steps, logged through Lightning."""
from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from ldm.eval.callback import FIDCallback


class _Images(Dataset):
    def __init__(self, n: int = 24) -> None:
        self.images = torch.rand(n, 16, 16, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i]}  # HWC in [-1, 1], the ldm.data convention


class _TinyModel(pl.LightningModule):
    """Samples = validation images plus a learnable offset (log_images like the LDM's)."""

    first_stage_key = "image"

    def __init__(self, offset: float = 0.5) -> None:
        super().__init__()
        self.offset = torch.nn.Parameter(torch.tensor(offset))
        self.calls: list[dict] = []

    def training_step(self, batch, batch_idx):
        return self.offset.abs() + 0.0 * batch["image"].mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def log_images(self, batch, N=8, sample=True, ddim_steps=200, ddim_eta=1.0, **kwargs):
        self.calls.append({"N": N, "ddim_steps": ddim_steps, "training": self.training})
        x = batch["image"][:N].permute(0, 3, 1, 2)
        return {"inputs": x, "samples": (x + self.offset).clamp(-1, 1)}

    def train_dataloader(self):
        return DataLoader(_Images(), batch_size=8)

    def val_dataloader(self):
        return DataLoader(_Images(), batch_size=8)


def _trainer(callback: FIDCallback, steps: int, tmp_path) -> pl.Trainer:
    return pl.Trainer(max_steps=steps, callbacks=[callback], accelerator="cpu", devices=1,
                      logger=pl.loggers.CSVLogger(tmp_path), enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, log_every_n_steps=1, default_root_dir=tmp_path)


def test_fid_is_computed_every_n_steps_and_logged(tmp_path):
    model = _TinyModel(offset=0.5)
    callback = FIDCallback(every_n_steps=2, num_samples=20, feature_extractor="pixels",
                           sample_kwargs={"ddim_steps": 7})
    trainer = _trainer(callback, 4, tmp_path)
    trainer.fit(model)
    sampling = model.calls
    assert {c["ddim_steps"] for c in sampling} == {7} and not any(c["training"] for c in sampling)
    assert sum(c["N"] for c in sampling) == 40  # 20 samples at steps 2 and 4
    assert model.training  # restored after sampling
    fid = trainer.callback_metrics["val/fid"].item()
    assert fid > 0 and np.isfinite(fid)
    metrics = next(tmp_path.rglob("metrics.csv")).read_text()
    assert "val/fid" in metrics.splitlines()[0]


def test_samples_equal_to_the_reference_give_zero_fid(tmp_path):
    model = _TinyModel(offset=0.0)
    callback = FIDCallback(every_n_steps=1, num_samples=24, feature_extractor="pixels")
    trainer = _trainer(callback, 1, tmp_path)
    trainer.fit(model)
    assert abs(trainer.callback_metrics["val/fid"].item()) < 1e-4


def test_a_given_reference_folder_is_used(tmp_path):
    from PIL import Image

    folder = tmp_path / "ref"
    folder.mkdir()
    for i, image in enumerate(_Images().images[:10]):
        Image.fromarray(((image + 1) * 127.5).round().byte().numpy()).save(folder / f"{i}.png")
    model = _TinyModel(offset=0.0)
    callback = FIDCallback(every_n_steps=1, num_samples=10, reference=str(folder),
                           feature_extractor="pixels")
    trainer = _trainer(callback, 1, tmp_path)
    trainer.fit(model)
    assert abs(trainer.callback_metrics["val/fid"].item()) < 1e-4


def test_invalid_arguments_raise():
    with pytest.raises(ValueError):
        FIDCallback(every_n_steps=0)


def test_the_callback_builds_from_a_lightning_config_section():
    from omegaconf import OmegaConf

    from ldm.util import instantiate_from_config

    config = OmegaConf.create({"target": "ldm.eval.callback.FIDCallback",
                               "params": {"every_n_steps": 1000, "num_samples": 250,
                                          "sample_kwargs": {"ddim_steps": 50, "ddim_eta": 0.0}}})
    callback = instantiate_from_config(config)
    assert isinstance(callback, FIDCallback) and callback.sample_kwargs["ddim_eta"] == 0.0
