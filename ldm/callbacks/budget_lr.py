"""`BudgetLRDecay`: a learning-rate decay that ends where the run ends, by steps or by time.

A step-based schedule (`ldm.lr_scheduler`, `scheduler_config`) needs the number of steps in
advance. A run capped by wall clock (`lightning.trainer.max_time`) does as many steps as the
machine allows, so a schedule sized for a fast machine is cut off before it decays on a slow one,
and the weights are left at a high learning rate. This callback measures the run's progress as
the larger of `global_step / max_steps` and `elapsed / max_time` (Lightning's own `Timer`, the
clock that stops the run, restored on resume), and sets every optimizer group's learning rate to
its initial value times `budget_lr_factor(progress)`: constant until `decay_start`, then half a
cosine down to `final_factor` at the end of the run. Configure it under `lightning.callbacks`:

    lightning:
      callbacks:
        budget_lr:
          target: ldm.callbacks.budget_lr.BudgetLRDecay
          params: {decay_start: 0.0, final_factor: 0.02}
"""
from __future__ import annotations

import logging
import math

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Timer

logger = logging.getLogger(__name__)


def run_progress(step: int, max_steps: int | None, elapsed: float | None, duration: float | None) -> float:
    """Fraction of the run done, in [0, 1]: the larger of the step and the time fractions
    (a limit that is None or not positive is not counted)."""
    fractions = [0.0]
    if max_steps is not None and max_steps > 0:
        fractions.append(step / max_steps)
    if duration is not None and duration > 0 and elapsed is not None:
        fractions.append(elapsed / duration)
    return min(1.0, max(fractions))


def budget_lr_factor(progress: float, decay_start: float = 0.0, final_factor: float = 0.0) -> float:
    """1 until `decay_start`, then half a cosine to `final_factor` at progress 1."""
    if progress <= decay_start:
        return 1.0
    t = min(1.0, (progress - decay_start) / (1.0 - decay_start))
    return final_factor + 0.5 * (1.0 - final_factor) * (1.0 + math.cos(math.pi * t))


class BudgetLRDecay(pl.Callback):
    """Decay every optimizer group's learning rate over the run's step or time budget.

    Args:
        decay_start: fraction of the run (0 <= decay_start < 1) after which the decay begins.
        final_factor: multiplier of the initial learning rate at the end of the run (0 to 1).
        log_every_n_steps: log the factor and the progress every this many steps (0: never).
    """

    def __init__(self, decay_start: float = 0.0, final_factor: float = 0.0, log_every_n_steps: int = 500):
        if not 0.0 <= decay_start < 1.0:
            raise ValueError(f"BudgetLRDecay: decay_start must be in [0, 1), got {decay_start}")
        if not 0.0 <= final_factor <= 1.0:
            raise ValueError(f"BudgetLRDecay: final_factor must be in [0, 1], got {final_factor}")
        self.decay_start = decay_start
        self.final_factor = final_factor
        self.log_every_n_steps = log_every_n_steps
        self.factor = 1.0

    @staticmethod
    def _timer(trainer: pl.Trainer) -> Timer | None:
        timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
        return timers[0] if timers else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        timer = self._timer(trainer)
        if (trainer.max_steps is None or trainer.max_steps <= 0) and (timer is None or timer.time_remaining() is None):
            raise ValueError("BudgetLRDecay needs a budget: set lightning.trainer.max_steps or max_time")
        if trainer.lr_scheduler_configs:
            raise ValueError("BudgetLRDecay sets the learning rate itself: remove the model's scheduler_config "
                             "or the budget_lr callback")
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:  # saved with the optimizer: a resumed run keeps it
                group.setdefault("initial_lr", group["lr"])

    def progress(self, trainer: pl.Trainer) -> float:
        """The run's progress now (`run_progress` of the trainer's step and Timer)."""
        timer = self._timer(trainer)
        elapsed = timer.time_elapsed() if timer is not None else None
        remaining = timer.time_remaining() if timer is not None else None
        duration = elapsed + remaining if remaining is not None else None
        return run_progress(trainer.global_step, trainer.max_steps, elapsed, duration)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        progress = self.progress(trainer)
        self.factor = budget_lr_factor(progress, self.decay_start, self.final_factor)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * self.factor
        step = trainer.global_step
        if self.log_every_n_steps and step % self.log_every_n_steps == 0:
            logger.info("step %d: run progress %.3f, learning-rate factor %.4f", step, progress, self.factor)
