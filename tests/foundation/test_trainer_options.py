"""Command-line trainer flags -> Lightning 2.x Trainer arguments."""
from __future__ import annotations

import pytest

from main import get_parser
from ldm.trainer_options import devices_per_node, given_trainer_args, trainer_kwargs


def parse(*argv):
    opt, unknown = get_parser().parse_known_args(list(argv))
    return opt, unknown


def test_gpus_list_means_cuda_indices_and_ddp():
    opt, _ = parse("--gpus", "0,1")
    kwargs = trainer_kwargs({}, given_trainer_args(opt))
    assert kwargs["accelerator"] == "gpu" and kwargs["devices"] == [0, 1] and kwargs["strategy"] == "ddp"
    assert devices_per_node(kwargs) == 2


def test_gpus_trailing_comma_is_one_device():
    opt, _ = parse("--gpus", "0,")
    kwargs = trainer_kwargs({}, given_trainer_args(opt))
    assert kwargs["devices"] == [0] and "strategy" not in kwargs


def test_cli_beats_config_and_values_are_typed():
    opt, unknown = parse("--max_steps", "10", "--limit_val_batches", "0.5", "--limit_train_batches", "3",
                         "--benchmark", "--precision", "bf16-mixed", "model.params.x=1")
    assert unknown == ["model.params.x=1"]
    kwargs = trainer_kwargs({"max_steps": 100, "benchmark": False, "accumulate_grad_batches": 2},
                            given_trainer_args(opt))
    assert kwargs["max_steps"] == 10 and kwargs["accumulate_grad_batches"] == 2
    assert kwargs["limit_val_batches"] == 0.5 and kwargs["limit_train_batches"] == 3
    assert kwargs["benchmark"] is True and kwargs["precision"] == "bf16-mixed"


def test_default_is_one_device_auto_accelerator():
    kwargs = trainer_kwargs({}, {})
    assert kwargs == {"accelerator": "auto", "devices": 1}


def test_lightning1_accelerator_ddp_becomes_strategy():
    kwargs = trainer_kwargs({"accelerator": "ddp", "gpus": "0,1"}, {})
    assert kwargs["strategy"] == "ddp" and kwargs["accelerator"] == "gpu"


def test_cpu_devices_count():
    opt, _ = parse("--accelerator", "cpu", "--devices", "2", "--strategy", "ddp")
    kwargs = trainer_kwargs({}, given_trainer_args(opt))
    assert kwargs == {"accelerator": "cpu", "devices": 2, "strategy": "ddp"}
    assert devices_per_node(kwargs) == 2


def test_bad_boolean_rejected():
    with pytest.raises(SystemExit):
        parse("--deterministic", "maybe")
