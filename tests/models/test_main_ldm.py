"""A tiny LatentDiffusion trained through `python main.py -t` as a user runs it; then `-r`."""
from __future__ import annotations

import copy
import csv

import torch
import yaml

from tests.foundation.run_main import only_run_dir, run_main
from tests.models.test_training import SCHEDULER
from tests.models.tiny import unconditional_kl_params


def config() -> dict:
    params = unconditional_kl_params(scale_by_std=True, scale_factor=1.0, scheduler_config=copy.deepcopy(SCHEDULER))
    return {
        "model": {"base_learning_rate": 2.5e-4, "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
                  "params": params},
        "data": {"target": "main.DataModuleFromConfig",
                 "params": {"batch_size": 8, "num_workers": 0,
                            "train": {"target": "tests.models.tiny.BlobImages", "params": {"length": 64}},
                            "validation": {"target": "tests.models.tiny.BlobImages",
                                           "params": {"length": 8, "seed": 1}}}},
        "lightning": {"trainer": {"max_steps": 200, "log_every_n_steps": 5, "enable_progress_bar": False,
                                  "limit_val_batches": 1, "check_val_every_n_epoch": 25},
                      "callbacks": {"image_logger": {"target": "main.ImageLogger",
                                                     "params": {"batch_frequency": 100000, "max_images": 2,
                                                                "increase_log_steps": False}}}},
    }


def logged(run, key: str) -> list[float]:
    with open(run / "csv" / "metrics.csv") as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def test_tiny_ldm_trains_through_main_and_resumes(tmp_path):
    (tmp_path / "ldm.yaml").write_text(yaml.safe_dump(config()))
    logs = tmp_path / "logs"
    run_main(["--base", str(tmp_path / "ldm.yaml"), "-t", "--accelerator", "cpu", "-l", str(logs)], cwd=tmp_path,
             timeout=900)
    run = only_run_dir(logs)
    losses = logged(run, "train/loss_simple_step")
    assert len(losses) >= 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, f"training loss did not fall: {first:.3f} -> {last:.3f}"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 200
    scale = ckpt["state_dict"]["scale_factor"]
    assert scale.item() != 1.0  # scale_by_std estimated 1/std of the first batch's latents

    run_main(["-r", str(run), "-t", "--accelerator", "cpu", "--max_steps", "210"], cwd=tmp_path, timeout=900)
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 210
    assert torch.equal(resumed["state_dict"]["scale_factor"], scale)  # not re-estimated after the resume
