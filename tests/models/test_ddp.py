"""2-process CPU DDP: every rank trains with rank 0's scale_by_std estimate."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_ddp_ranks_agree_on_scale_factor(tmp_path):
    script = Path(__file__).with_name("ddp_scale_by_std.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, check=False,
                            timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in records)
    assert records[0]["batch_sum"] != pytest.approx(records[1]["batch_sum"])  # different data per rank
    assert records[0]["scale_factor"] != 1.0
    assert records[0]["scale_factor"] == records[1]["scale_factor"]
