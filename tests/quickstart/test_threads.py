"""Thread choice of the quickstart on a possibly shared CPU."""
from __future__ import annotations

import os

from ldm.quickstart import threads


def test_busy_cores_is_a_fraction_of_the_machine():
    busy = threads.busy_cores(seconds=0.2)
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6


def test_choose_threads(monkeypatch):
    assert threads.choose_threads(3)[0] == 3
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=1.0: 0.1)
    assert threads.choose_threads()[0] == (os.cpu_count() or 1)
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=1.0: 1.5)
    assert threads.choose_threads() == (1, 1.5)
