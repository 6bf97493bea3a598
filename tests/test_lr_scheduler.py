"""Learning-rate multipliers: the original's warm-up / cosine / linear formulas, step by step."""
from __future__ import annotations

import logging
import math

import pytest
import torch

from ldm.lr_scheduler import LambdaLinearScheduler, LambdaWarmUpCosineScheduler, LambdaWarmUpCosineScheduler2
from ldm.util import instantiate_from_config


def test_warm_up_cosine():
    s = LambdaWarmUpCosineScheduler(warm_up_steps=10, lr_min=0.1, lr_max=1.0, lr_start=0.0, max_decay_steps=110)
    assert s(0) == 0.0
    assert s(5) == pytest.approx(0.5)
    assert s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.1 + 0.45 * (1 + math.cos(0.5 * math.pi)))
    assert s(110) == pytest.approx(0.1)
    assert s(10_000) == pytest.approx(0.1)  # held after max_decay_steps
    assert s.last_lr == pytest.approx(0.1)


def test_warm_up_cosine_cycles():
    s = LambdaWarmUpCosineScheduler2(warm_up_steps=[2, 4], f_min=[0.1, 0.2], f_max=[1.0, 1.0],
                                     f_start=[0.0, 0.5], cycle_lengths=[10, 20])
    assert s(0) == 0.0
    assert s(1) == pytest.approx(0.5)
    assert s(2) == pytest.approx(1.0)
    assert s(6) == pytest.approx(0.1 + 0.45 * (1 + math.cos(0.5 * math.pi)))
    assert s(10) == pytest.approx(0.1)  # a cycle boundary belongs to the earlier cycle
    assert s(11) == pytest.approx(0.5 + 0.5 / 4)  # step 1 of cycle 1
    assert s(30) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="past the last cycle"):
        s(31)
    with pytest.raises(ValueError, match="one entry per cycle"):
        LambdaWarmUpCosineScheduler2([1], [0.1, 0.1], [1], [0], [10])


def test_linear_decay_spans_the_whole_cycle():
    s = LambdaLinearScheduler(warm_up_steps=[10], f_min=[0.0], f_max=[1.0], f_start=[0.0], cycle_lengths=[100])
    assert s(5) == pytest.approx(0.5)
    assert s(10) == pytest.approx(0.9)  # (100 - 10) / 100, the original's formula
    assert s(55) == pytest.approx(0.45)
    assert s(100) == pytest.approx(0.0)


def test_sd_v1_scheduler_config_with_lambda_lr():
    config = {"target": "ldm.lr_scheduler.LambdaLinearScheduler",
              "params": {"warm_up_steps": [10000], "cycle_lengths": [10000000000000], "f_start": [1.0e-6],
                         "f_max": [1.0], "f_min": [1.0]}}
    schedule = instantiate_from_config(config)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=schedule)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 * 1e-6)
    for _ in range(5000):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 * (1e-6 + (1 - 1e-6) * 0.5))
    assert schedule(10000) == pytest.approx(1.0) and schedule(10**9) == pytest.approx(1.0)


def test_verbosity_logs_through_logging(caplog):
    s = LambdaWarmUpCosineScheduler2([2], [0.1], [1.0], [0.0], [10], verbosity_interval=5)
    with caplog.at_level(logging.INFO, logger="ldm.lr_scheduler"):
        for n in range(11):
            s(n)
    assert len([r for r in caplog.records if "lr-multiplier" in r.getMessage()]) == 3  # steps 0, 5, 10
