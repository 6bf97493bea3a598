"""Learning-rate multipliers for `torch.optim.lr_scheduler.LambdaLR`, as in the original configs.

Each scheduler is a callable `step -> multiplier` (use it with a base learning rate; the
released configs pair the cyclic ones with `LambdaLR` and a multiplier in [0, 1]). Semantics
are the original's: linear warm-up from `f_start` to `f_max`, then cosine or linear decay
towards `f_min`. `verbosity_interval > 0` logs the multiplier every that many steps.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)


def warm_up(n: float, warm_up_steps: float, f_start: float, f_max: float) -> float:
    """Linear ramp from `f_start` at step 0 to `f_max` at `warm_up_steps`."""
    return (f_max - f_start) / warm_up_steps * n + f_start


def cosine_decay(t: float, f_min: float, f_max: float) -> float:
    """Half a cosine from `f_max` (t = 0) to `f_min` (t >= 1)."""
    return f_min + 0.5 * (f_max - f_min) * (1 + math.cos(min(t, 1.0) * math.pi))


class LambdaWarmUpCosineScheduler:
    """Linear warm-up, then one cosine decay; held at `lr_min` after `max_decay_steps`.

    Args:
        warm_up_steps: steps of linear warm-up from `lr_start` to `lr_max`.
        lr_min: final multiplier.
        lr_max: multiplier at the end of the warm-up.
        lr_start: multiplier at step 0.
        max_decay_steps: step at which the cosine reaches `lr_min`.
        verbosity_interval: log every this many steps (0: never).
    """

    def __init__(self, warm_up_steps: int, lr_min: float, lr_max: float, lr_start: float, max_decay_steps: int,
                 verbosity_interval: int = 0):
        self.lr_warm_up_steps = warm_up_steps
        self.lr_start = lr_start
        self.lr_min = lr_min
        self.lr_max = lr_max
        self.lr_max_decay_steps = max_decay_steps
        self.last_lr = 0.0
        self.verbosity_interval = verbosity_interval

    def schedule(self, n: int, **kwargs) -> float:
        if self.verbosity_interval > 0 and n % self.verbosity_interval == 0:
            logger.info("current step: %s, recent lr-multiplier: %s", n, self.last_lr)
        if n < self.lr_warm_up_steps:
            lr = warm_up(n, self.lr_warm_up_steps, self.lr_start, self.lr_max)
        else:
            t = (n - self.lr_warm_up_steps) / (self.lr_max_decay_steps - self.lr_warm_up_steps)
            lr = cosine_decay(t, self.lr_min, self.lr_max)
        self.last_lr = float(lr)
        return self.last_lr

    def __call__(self, n: int, **kwargs) -> float:
        return self.schedule(n, **kwargs)


class LambdaWarmUpCosineScheduler2:
    """Repeated cycles of warm-up + cosine decay, one list entry per cycle (use base lr 1.0).

    Cycle i covers steps (sum(cycle_lengths[:i]), sum(cycle_lengths[:i+1])]; inside it the
    step counts from the cycle start.

    Args:
        warm_up_steps: warm-up steps per cycle.
        f_min: final multiplier per cycle.
        f_max: peak multiplier per cycle.
        f_start: multiplier at the start of each cycle.
        cycle_lengths: length of each cycle in steps.
        verbosity_interval: log every this many steps (0: never).
    """

    def __init__(self, warm_up_steps: Sequence[int], f_min: Sequence[float], f_max: Sequence[float],
                 f_start: Sequence[float], cycle_lengths: Sequence[int], verbosity_interval: int = 0):
        lengths = {len(warm_up_steps), len(f_min), len(f_max), len(f_start), len(cycle_lengths)}
        if len(lengths) != 1:
            raise ValueError("warm_up_steps, f_min, f_max, f_start and cycle_lengths need one entry per cycle each")
        self.lr_warm_up_steps = list(warm_up_steps)
        self.f_start = list(f_start)
        self.f_min = list(f_min)
        self.f_max = list(f_max)
        self.cycle_lengths = list(cycle_lengths)
        self.cum_cycles = np.cumsum([0] + self.cycle_lengths)
        self.last_f = 0.0
        self.verbosity_interval = verbosity_interval

    def find_in_interval(self, n: int) -> int:
        """Index of the cycle that step `n` belongs to."""
        for interval, cl in enumerate(self.cum_cycles[1:]):
            if n <= cl:
                return interval
        raise ValueError(f"step {n} is past the last cycle (total length {self.cum_cycles[-1]})")

    def _decay(self, n: int, cycle: int) -> float:
        t = (n - self.lr_warm_up_steps[cycle]) / (self.cycle_lengths[cycle] - self.lr_warm_up_steps[cycle])
        return cosine_decay(t, self.f_min[cycle], self.f_max[cycle])

    def schedule(self, n: int, **kwargs) -> float:
        cycle = self.find_in_interval(n)
        n = n - self.cum_cycles[cycle]
        if self.verbosity_interval > 0 and n % self.verbosity_interval == 0:
            logger.info("current step: %s, recent lr-multiplier: %s, current cycle %s", n, self.last_f, cycle)
        if n < self.lr_warm_up_steps[cycle]:
            f = warm_up(n, self.lr_warm_up_steps[cycle], self.f_start[cycle], self.f_max[cycle])
        else:
            f = self._decay(n, cycle)
        self.last_f = float(f)
        return self.last_f

    def __call__(self, n: int, **kwargs) -> float:
        return self.schedule(n, **kwargs)


class LambdaLinearScheduler(LambdaWarmUpCosineScheduler2):
    """As `LambdaWarmUpCosineScheduler2` with a linear decay from `f_max` towards `f_min`.

    After the warm-up, `f = f_min + (f_max - f_min) * (cycle_length - n) / cycle_length` with n
    counted from the cycle start (the original's formula: the decay spans the whole cycle, so
    it starts slightly below `f_max`). SD v1 uses one cycle of 1e13 steps, i.e. a constant
    multiplier after 10000 warm-up steps.
    """

    def _decay(self, n: int, cycle: int) -> float:
        length = self.cycle_lengths[cycle]
        return self.f_min[cycle] + (self.f_max[cycle] - self.f_min[cycle]) * (length - n) / length
