"""Which training precision the quickstart uses on this machine.

bf16 autocast (Lightning's "bf16-mixed") only pays on a CPU that multiplies bf16 natively (AMX or
AVX512-BF16): there the quickstart's LDM step at batch 128 takes 0.32 s instead of 0.45 s (one
thread, docs/quickstart.md). Without those instructions bf16 matmuls take slower code paths (not
measured here), so such CPUs keep float32. On CUDA the quickstart keeps float32 too, the
precision of its measured GPU runs.
"""
from __future__ import annotations

PRECISIONS = ("auto", "32", "bf16-mixed")
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The instruction-set flags of the first CPU in `cpuinfo` (empty where it cannot be read)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def choose_precision(requested: str, device: str, cpuinfo: str = "/proc/cpuinfo") -> str:
    """Lightning's `trainer.precision` for `requested` ("auto", "32" or "bf16-mixed") on `device`
    ("cpu" or "cuda"): "auto" is "bf16-mixed" on a CPU with native bf16 instructions, else "32"."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision '{requested}'; expected one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if device == "cpu" and cpu_flags(cpuinfo) & set(NATIVE_BF16_FLAGS):
        return "bf16-mixed"
    return "32"
