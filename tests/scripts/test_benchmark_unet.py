"""scripts/benchmark_unet.py: one variant measured in-process on a tiny width, and the table."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.scripts.conftest import SCRIPTS


@pytest.fixture(scope="module")
def bench():
    """The script as a module, registered in sys.modules (its dataclass needs that)."""
    spec = importlib.util.spec_from_file_location("benchmark_unet_script", SCRIPTS / "benchmark_unet.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)

TINY = {"device": "cpu", "model_channels": 32, "latent_size": 8, "batch_size": 1, "context_len": 4, "warmup": 0,
        "repeat": 1, "threads": 1}


def test_variant_measures_time_and_memory(bench):
    result = bench.run_variant(TINY, bench.Variant(attention="math", checkpoint=True, channels_last=True))
    assert result["label"] == "math + fp32 + checkpoint + channels_last"
    for name in ("fwd", "fwd_bwd"):
        assert result[f"{name}_ms"] > 0 and result[f"{name}_samples_per_s"] > 0
    assert result["fwd_bwd_peak_mib"] > result["fwd_peak_mib"] > 0  # gradients are allocated


def test_defaults_and_table(bench):
    assert bench.Variant().attention == "sdpa"
    spec = bench.spec_from_args(bench.parse_args(["--device", "cpu"]))
    assert spec["model_channels"] == 64 and spec["latent_size"] == 32
    rows = [{"label": "sdpa + fp32", "attention": "sdpa", "checkpoint": False, "precision": "fp32",
             "channels_last": False, "compile": False, "fwd_ms": 10.0, "fwd_samples_per_s": 100.0, "fwd_peak_mib": 1.0,
             "fwd_bwd_ms": 30.0, "fwd_bwd_samples_per_s": 33.3, "fwd_bwd_peak_mib": 5.0},
            {"label": "math + fp32", "attention": "math", "checkpoint": False, "precision": "fp32",
             "channels_last": False, "compile": False, "fwd_ms": 20.0, "fwd_samples_per_s": 50.0, "fwd_peak_mib": 2.0,
             "fwd_bwd_ms": 45.0, "fwd_bwd_samples_per_s": 22.2, "fwd_bwd_peak_mib": 6.0},
            {"label": "sdpa + fp32 + compile", "error": "timed out"}]
    table = bench.format_table(spec, rows)
    assert table.count("\n") == 4 and "n/a (timed out)" in table
    assert bench.compare_backends(rows) == ["SDPA vs math [sdpa + fp32]: forward x2.00, forward+backward x1.50"]
    assert len(bench.grid_variants()) == 32
