"""How many torch threads a CPU run should use on a machine that other work may share.

With more OpenMP threads than free cores, the threads of one process wait on each other at every
operation and a 2-thread run on a busy 2-core machine gets several times slower than a 1-thread
run (measured here: about 5x for the quickstart's autoencoder). So: all cores when the machine is
idle, one thread when other work already keeps a core busy.
"""
from __future__ import annotations

import os
import time


def busy_cores(seconds: float = 1.0) -> float:
    """How many cores other processes keep busy, from /proc/stat over `seconds` (Linux); else
    the 1-minute load average."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return (os.cpu_count() or 1) * (1.0 - (idle1 - idle0) / max(1, total1 - total0))


def choose_threads(requested: int | None = None) -> tuple[int, float]:
    """(torch threads per process, cores busy with other work): `requested` if given, else all
    cores on an idle machine and 1 when more than half a core is busy."""
    busy = busy_cores()
    if requested:
        return requested, busy
    return (1 if busy > 0.5 else os.cpu_count() or 1), busy
