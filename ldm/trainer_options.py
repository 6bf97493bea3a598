"""Trainer options on the command line, the way CompVis `main.py` users give them.

Lightning 2.x removed `Trainer.add_argparse_args`, so the flags are listed here as data:
`TRAINER_FLAGS` maps each flag to a parser. `trainer_kwargs` merges the config's
`lightning.trainer` section with the flags given (flags win) and translates the Lightning 1.x
spellings (`gpus`, `accelerator: ddp`) into Lightning 2.x arguments.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any


def int_or_float(value: str) -> int | float:
    """'10' -> 10 batches, '0.25' -> a fraction (Lightning's limit_*/val_check_interval)."""
    number = float(value)
    return int(number) if number.is_integer() and "." not in str(value) else number


def str2bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("yes", "true", "t", "y", "1"):
        return True
    if str(value).lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected, got '{value}'")


def devices_value(value: Any) -> int | list[int] | str:
    """'2' -> 2 devices, '0,1' or '1,' -> device indices [0, 1] / [1], 'auto' -> 'auto'."""
    if isinstance(value, (int, list)):
        return value
    text = str(value).strip()
    if text == "auto":
        return text
    if "," in text:
        return [int(v) for v in text.split(",") if v.strip()]
    return int(text)


def precision_value(value: Any) -> int | str:
    text = str(value)
    return int(text) if text.isdigit() else text


# flag -> parser of its value. Flags absent from the command line are not passed.
TRAINER_FLAGS: dict[str, Callable[[str], Any]] = {
    "gpus": str,
    "accelerator": str,
    "devices": devices_value,
    "num_nodes": int,
    "strategy": str,
    "precision": precision_value,
    "max_steps": int,
    "max_epochs": int,
    "min_epochs": int,
    "accumulate_grad_batches": int,
    "check_val_every_n_epoch": int,
    "limit_train_batches": int_or_float,
    "limit_val_batches": int_or_float,
    "limit_test_batches": int_or_float,
    "val_check_interval": int_or_float,
    "num_sanity_val_steps": int,
    "log_every_n_steps": int,
    "gradient_clip_val": float,
    "gradient_clip_algorithm": str,
    "benchmark": str2bool,
    "deterministic": str2bool,
    "fast_dev_run": int_or_float,
    "profiler": str,
    "detect_anomaly": str2bool,
}

# Lightning 1.x `accelerator` values that are strategies in 2.x.
_STRATEGY_ACCELERATORS = {"ddp", "ddp_spawn", "dp", "ddp2", "ddp_sharded", "deepspeed", "fsdp"}


def add_trainer_args(parser: argparse.ArgumentParser) -> None:
    """Add one `--flag` per entry of TRAINER_FLAGS (default: not given)."""
    group = parser.add_argument_group("trainer", "Lightning Trainer options (override lightning.trainer)")
    for flag, parse in TRAINER_FLAGS.items():
        kwargs: dict[str, Any] = {"type": parse, "default": None, "dest": flag}
        if parse is str2bool:
            kwargs.update(nargs="?", const=True)
        group.add_argument(f"--{flag}", **kwargs)


def given_trainer_args(opt: argparse.Namespace) -> dict[str, Any]:
    """The trainer flags present on the command line."""
    return {k: getattr(opt, k) for k in TRAINER_FLAGS if getattr(opt, k, None) is not None}


def trainer_kwargs(config_trainer: Mapping[str, Any], cli: Mapping[str, Any]) -> dict[str, Any]:
    """Lightning 2.x Trainer arguments from the config section and the command-line flags."""
    merged = {**dict(config_trainer), **dict(cli)}
    gpus = merged.pop("gpus", None)
    accelerator = merged.get("accelerator")
    if accelerator in _STRATEGY_ACCELERATORS:
        merged.setdefault("strategy", accelerator)
        merged.pop("accelerator")
    if gpus is not None and str(gpus).strip() not in ("", "None"):
        devices = devices_value(gpus)
        if devices == 0:  # Lightning 1.x: gpus=0 means CPU
            merged.setdefault("accelerator", "cpu")
        else:
            merged.setdefault("accelerator", "gpu")
            merged.setdefault("devices", devices)
    if "devices" in merged:
        merged["devices"] = devices_value(merged["devices"])
    merged.setdefault("accelerator", "auto")
    merged.setdefault("devices", 1 if merged["accelerator"] in ("auto", "cpu") else "auto")
    if "strategy" not in merged and (devices_per_node(merged) > 1 or int(merged.get("num_nodes", 1)) > 1):
        merged["strategy"] = "ddp"  # the original always trained with DDP
    return merged


def devices_per_node(kwargs: Mapping[str, Any]) -> int:
    """Number of devices (processes) per node that `kwargs` asks for; 'auto'/-1 count as found."""
    devices = kwargs.get("devices", 1)
    if isinstance(devices, list):
        return len(devices)
    if devices in ("auto", -1, "-1"):
        import torch

        if kwargs.get("accelerator") in ("gpu", "cuda", "auto") and torch.cuda.is_available():
            return torch.cuda.device_count()
        return 1
    return int(devices)
