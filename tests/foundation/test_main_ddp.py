"""Two-process CPU DDP through `python main.py` (run as a subprocess, never in-process)."""
from __future__ import annotations

import torch

from tests.foundation.run_main import only_run_dir, run_main, write_tiny_config


def test_two_process_cpu_ddp_writes_once(tmp_path):
    base = write_tiny_config(tmp_path / "tiny.yaml", max_steps=4, image_frequency=2)
    logs = tmp_path / "logs"
    proc = run_main(["--base", str(base), "-t", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
                     "-l", str(logs), "--limit_val_batches", "1"], cwd=tmp_path, timeout=600)
    run = only_run_dir(logs)  # rank 1 used rank 0's folder instead of making its own
    assert "2 (num_gpus)" in proc.stderr  # the learning rate counts both processes
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    assert len(list((run / "configs").glob("*-project.yaml"))) == 1
    # image grids come from rank 0 only: one file per key and logging step
    train_images = sorted(p.name for p in (run / "images" / "train").glob("*.png"))
    assert len(train_images) == 4, train_images  # 2 keys x steps 2 and 4
    assert all(name.split("_gs-")[0] in ("inputs", "reconstructions") for name in train_images)
