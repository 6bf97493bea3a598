"""A tiny LatentDiffusion trains in-process with a plain Lightning Trainer (CPU, seconds)."""
from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from ldm.util import instantiate_from_config
from tests.models.tiny import LDM, BlobImages, unconditional_kl_params

pytestmark = [pytest.mark.filterwarnings("ignore:You called `self.log"),
              pytest.mark.filterwarnings("ignore:Found .* module.*in eval mode"),
              pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before")]

SCHEDULER = {"target": "ldm.lr_scheduler.LambdaLinearScheduler",
             "params": {"warm_up_steps": [10], "cycle_lengths": [10_000_000], "f_start": [0.1], "f_max": [1.0],
                        "f_min": [1.0]}}


class LossRecorder(pl.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def make_trainer(tmp_path, max_steps: int, callbacks=()) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                      val_check_interval=max_steps, check_val_every_n_epoch=None, num_sanity_val_steps=0,
                      default_root_dir=tmp_path,
                      callbacks=list(callbacks))


def tiny_model(**overrides):
    params = unconditional_kl_params(scale_by_std=True, scale_factor=1.0, scheduler_config=copy.deepcopy(SCHEDULER),
                                     **overrides)
    model = instantiate_from_config({"target": LDM, "params": params})
    model.learning_rate = 2e-3
    return model


def loaders(batch_size: int = 8):
    train = DataLoader(BlobImages(length=64, seed=0), batch_size=batch_size, shuffle=True, drop_last=True)
    val = DataLoader(BlobImages(length=8, seed=1), batch_size=batch_size)
    return train, val


def test_tiny_latent_diffusion_learns(tmp_path):
    pl.seed_everything(0)
    model = tiny_model()
    ae_before = copy.deepcopy(model.first_stage_model.state_dict())
    recorder = LossRecorder()
    trainer = make_trainer(tmp_path, max_steps=150, callbacks=[recorder])
    train, val = loaders()
    trainer.fit(model, train, val)

    losses = torch.tensor(recorder.losses)
    assert len(losses) == 150 and torch.isfinite(losses).all()
    first, last = losses[:20].mean().item(), losses[-30:].mean().item()
    assert last < 0.6 * first, f"loss did not fall: {first:.3f} -> {last:.3f}"

    metrics = trainer.callback_metrics
    for key in ("train/loss_simple", "val/loss_simple", "val/loss_simple_ema", "val/loss_ema", "lr_abs",
                "scale_factor"):
        assert key in metrics, key
    # scale_by_std: estimated once on the first batch, saved as a buffer
    assert model.scale_factor.item() != 1.0 and 0.05 < model.scale_factor.item() < 20
    assert metrics["scale_factor"].item() == pytest.approx(model.scale_factor.item())
    # the first stage stayed frozen, the EMA followed the network
    for name, value in model.first_stage_model.state_dict().items():
        assert torch.equal(value, ae_before[name]), name
    assert model.model_ema.num_updates.item() == 150
    # LambdaLinearScheduler: warm-up from 0.1 to 1 over 10 steps, then constant
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(2e-3)

    # save, then resume: the estimated scale factor survives and is not re-estimated
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    saved = model.scale_factor.clone()
    resumed = tiny_model()
    resumed_trainer = make_trainer(tmp_path, max_steps=155)
    resumed_trainer.fit(resumed, *loaders(), ckpt_path=path)
    assert resumed.restarted_from_ckpt and resumed_trainer.global_step == 155
    assert torch.equal(resumed.scale_factor, saved)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(state["scale_factor"], saved)
    assert state["model_ema.num_updates"].dtype == torch.int32


def test_v_prediction_with_min_snr_and_offset_noise_trains(tmp_path):
    pl.seed_everything(1)
    model = tiny_model(parameterization="v", min_snr_gamma=5.0, offset_noise_strength=0.1, zero_terminal_snr=True,
                       use_ema=False)
    recorder = LossRecorder()
    make_trainer(tmp_path, max_steps=60, callbacks=[recorder]).fit(model, *loaders())
    losses = torch.tensor(recorder.losses)
    assert torch.isfinite(losses).all()
    assert losses[-15:].mean() < losses[:10].mean()


def test_min_snr_offset_steps_switch_at_the_trainer_step(tmp_path, monkeypatch):
    """Under a real Trainer the offset of `min_snr_offset_steps` holds for exactly that many
    optimizer steps (Lightning's global_step), then the loss uses offset 0 and Adam restarts."""
    from ldm.models.diffusion import pixel_ddpm

    offsets: list[float] = []

    def recording(alphas_cumprod, t, gamma, parameterization, offset=0.0):
        offsets.append(offset)
        return original(alphas_cumprod, t, gamma, parameterization, offset)

    original = pixel_ddpm.min_snr_weights
    monkeypatch.setattr(pixel_ddpm, "min_snr_weights", recording)
    pl.seed_everything(2)
    model = tiny_model(parameterization="v", min_snr_gamma=5.0, min_snr_offset=1.0, min_snr_offset_steps=2,
                       use_ema=False)
    adam_steps = AdamStepRecorder()
    make_trainer(tmp_path, max_steps=5, callbacks=[adam_steps]).fit(model, *loaders())
    assert offsets[:5] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert adam_steps.steps == [1, 2, 1, 2, 3]  # the moments restart with the weighting


class AdamStepRecorder(pl.Callback):
    """Adam's own step count (its bias-correction clock) after every training batch."""

    def __init__(self):
        self.steps: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        optimizer = trainer.optimizers[0]
        state = optimizer.state[optimizer.param_groups[0]["params"][0]]
        self.steps.append(int(state["step"]))
