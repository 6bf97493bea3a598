"""A SIGKILL in the middle of a checkpoint write leaves the previous file loadable."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

from ldm.checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from tests.foundation.run_main import REPO_ROOT

WRITER = """
import sys, torch
from ldm.checkpoint_io import AtomicCheckpointIO
io = AtomicCheckpointIO()
big = {"state_dict": {"w": torch.full((64, 1024, 1024), 2.0)}, "global_step": 2}  # 256 MiB
while True:
    io.save_checkpoint(big, sys.argv[1])
"""


def test_kill_during_write_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, str(path))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until a temporary file is being written
            tmp = [p for p in path.parent.iterdir() if p.name.endswith(".tmp") and p.stat().st_size > 0]
            if tmp:
                break
            time.sleep(0.005)
        else:
            raise AssertionError("the writer never started a temporary file")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["global_step"] in (1, 2)  # the old file, or a complete new one; never a partial one
    if ckpt["global_step"] == 1:
        assert torch.equal(ckpt["state_dict"]["w"], torch.ones(3))
    else:
        assert ckpt["state_dict"]["w"].shape == (64, 1024, 1024)


def test_atomic_save_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.ckpt"
    atomic_torch_save({"x": 1}, path)
    atomic_torch_save({"x": 2}, path)
    assert torch.load(path, weights_only=True) == {"x": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]
