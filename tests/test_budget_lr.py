"""BudgetLRDecay: the learning rate decays over the run's step or time budget."""
from __future__ import annotations

import math
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Timer
from torch.utils.data import DataLoader, TensorDataset

from ldm.callbacks.budget_lr import BudgetLRDecay, budget_lr_factor, run_progress

pytestmark = [pytest.mark.filterwarnings("ignore:You called `self.log"),
              pytest.mark.filterwarnings("ignore:.*does not have many workers")]


def test_run_progress_is_the_larger_fraction():
    assert run_progress(10, 100, None, None) == pytest.approx(0.1)
    assert run_progress(10, 100, 30.0, 60.0) == pytest.approx(0.5)  # time runs out first
    assert run_progress(90, 100, 30.0, 60.0) == pytest.approx(0.9)  # steps run out first
    assert run_progress(10, -1, 15.0, 60.0) == pytest.approx(0.25)  # Lightning's "no max_steps"
    assert run_progress(200, 100, None, None) == 1.0
    assert run_progress(5, None, None, None) == 0.0


def test_budget_lr_factor_holds_then_follows_half_a_cosine():
    assert budget_lr_factor(0.0) == 1.0
    assert budget_lr_factor(0.5) == pytest.approx(0.5)
    assert budget_lr_factor(1.0, final_factor=0.02) == pytest.approx(0.02)
    assert budget_lr_factor(0.3, decay_start=0.5) == 1.0
    assert budget_lr_factor(0.75, decay_start=0.5, final_factor=0.1) == pytest.approx(0.1 + 0.45)
    assert budget_lr_factor(0.6, 0.2, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


class Regression(pl.LightningModule):
    """y = 2x with two parameter groups (learning rates 0.1 and 0.01), recording the rates used."""

    def __init__(self, scheduler: bool = False):
        super().__init__()
        self.a, self.b = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
        self.scheduler = scheduler
        self.lrs: list[tuple[float, float]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.b(self.a(x)), y)

    def on_before_optimizer_step(self, optimizer):
        self.lrs.append(tuple(g["lr"] for g in optimizer.param_groups))

    def configure_optimizers(self):
        opt = torch.optim.SGD([{"params": self.a.parameters(), "lr": 0.1},
                               {"params": self.b.parameters(), "lr": 0.01}])
        if self.scheduler:
            return [opt], [torch.optim.lr_scheduler.LambdaLR(opt, lambda n: 1.0)]
        return opt


def data() -> DataLoader:
    x = torch.linspace(-1, 1, 64)[:, None]
    return DataLoader(TensorDataset(x, 2 * x), batch_size=8)


def trainer(tmp_path, callbacks, **kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                      callbacks=callbacks, **kwargs)


def test_rates_follow_the_step_budget_in_every_group(tmp_path):
    torch.set_num_threads(1)
    model = Regression()
    trainer(tmp_path, [BudgetLRDecay(decay_start=0.25, final_factor=0.1)], max_steps=8).fit(model, data())
    expected = [budget_lr_factor(step / 8, 0.25, 0.1) for step in range(8)]
    assert [a for a, _ in model.lrs] == pytest.approx([0.1 * f for f in expected])
    assert [b for _, b in model.lrs] == pytest.approx([0.01 * f for f in expected])
    assert model.lrs[0] == pytest.approx((0.1, 0.01)) and model.lrs[-1][0] < 0.03


class FakeClock:
    """Stands in for the Timer's time.monotonic: each call advances it by one second."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_rates_follow_the_time_budget(tmp_path, monkeypatch):
    """With max_time and far more max_steps than it allows, the decay follows Lightning's Timer."""
    torch.set_num_threads(1)
    import lightning.pytorch.callbacks.timer as timer_module

    monkeypatch.setattr(timer_module, "time", SimpleNamespace(monotonic=FakeClock()))
    model, callback = Regression(), BudgetLRDecay(final_factor=0.0)
    progress: list[float] = []

    class Recorder(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            progress.append(callback.progress(trainer))

    trainer(tmp_path, [callback, Recorder()], max_steps=10_000, max_time={"seconds": 60}).fit(model, data())
    assert 3 <= len(model.lrs) < 60  # stopped by the time budget, long before max_steps
    assert all(p2 > p1 for p1, p2 in zip(progress, progress[1:]))  # time went on
    assert model.lrs[0][0] > 0.09 and model.lrs[-1][0] < 0.5 * model.lrs[0][0]
    timer = next(c for c in model.trainer.callbacks if isinstance(c, Timer))
    assert timer.time_elapsed() >= 60  # what stopped the run is the clock the decay followed


def test_the_initial_rates_are_kept_for_a_resumed_run(tmp_path):
    torch.set_num_threads(1)
    model = Regression()
    fit = trainer(tmp_path, [BudgetLRDecay()], max_steps=4)
    fit.fit(model, data())
    saved = fit.optimizers[0].state_dict()["param_groups"]
    assert [g["initial_lr"] for g in saved] == [0.1, 0.01]
    assert saved[0]["lr"] < 0.1


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="decay_start"):
        BudgetLRDecay(decay_start=1.0)
    with pytest.raises(ValueError, match="final_factor"):
        BudgetLRDecay(final_factor=1.5)
    with pytest.raises(ValueError, match="max_steps or max_time"):
        trainer(tmp_path, [BudgetLRDecay()], max_epochs=1).fit(Regression(), data())
    with pytest.raises(ValueError, match="scheduler_config"):
        trainer(tmp_path, [BudgetLRDecay()], max_steps=2).fit(Regression(scheduler=True), data())
