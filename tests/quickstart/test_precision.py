"""The quickstart's choice of training precision."""
from __future__ import annotations

import pytest

from ldm.quickstart.precision import choose_precision, cpu_flags

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\nprocessor\t: 1\n"
OLDER_AVX2 = "processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n"


@pytest.fixture
def cpuinfo(tmp_path):
    def write(text: str) -> str:
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        return str(path)
    return write


def test_cpu_flags_reads_the_flags_line(cpuinfo):
    assert cpu_flags(cpuinfo(SAPPHIRE_RAPIDS)) == {"fpu", "sse", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    assert cpu_flags(cpuinfo("processor\t: 0\n")) == set()
    assert cpu_flags("/nonexistent/cpuinfo") == set()


def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(cpuinfo):
    assert choose_precision("auto", "cpu", cpuinfo(SAPPHIRE_RAPIDS)) == "bf16-mixed"
    assert choose_precision("auto", "cpu", cpuinfo("flags\t: avx512f avx512_bf16\n")) == "bf16-mixed"
    assert choose_precision("auto", "cpu", cpuinfo(OLDER_AVX2)) == "32"
    assert choose_precision("auto", "cpu", "/nonexistent/cpuinfo") == "32"
    assert choose_precision("auto", "cuda", cpuinfo(SAPPHIRE_RAPIDS)) == "32"


def test_explicit_precision_is_kept_and_unknown_is_refused(cpuinfo):
    assert choose_precision("32", "cpu", cpuinfo(SAPPHIRE_RAPIDS)) == "32"
    assert choose_precision("bf16-mixed", "cuda", cpuinfo(OLDER_AVX2)) == "bf16-mixed"
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        choose_precision("fp8", "cpu")
