"""Helpers to run `python main.py ...` in a subprocess the way a user does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def write_tiny_config(path: Path, max_steps: int = 4, image_frequency: int = 2, extra: dict | None = None) -> Path:
    """A config training tests.helpers.tiny.TinyModel on random images."""
    config = {
        "model": {"base_learning_rate": 1.0e-4, "target": "tests.helpers.tiny.TinyModel",
                  "params": {"channels": 4}},
        "data": {"target": "main.DataModuleFromConfig",
                 "params": {"batch_size": 2, "num_workers": 0,
                            "train": {"target": "tests.helpers.tiny.TinyImages", "params": {"n": 8}},
                            "validation": {"target": "tests.helpers.tiny.TinyImages", "params": {"n": 4, "seed": 1}}}},
        "lightning": {"callbacks": {"image_logger": {"target": "main.ImageLogger",
                                                     "params": {"batch_frequency": image_frequency, "max_images": 2,
                                                                "increase_log_steps": False}}},
                      "trainer": {"max_steps": max_steps, "log_every_n_steps": 1, "enable_progress_bar": False}},
    }
    for key, value in (extra or {}).items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(config))
    return path


def run_main(args: list[str], cwd: Path, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"main.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def only_run_dir(logdir: Path) -> Path:
    runs = [p for p in logdir.iterdir() if p.is_dir()]
    assert len(runs) == 1, f"expected one run folder in {logdir}, found {runs}"
    return runs[0]
