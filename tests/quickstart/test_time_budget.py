"""The quickstart's LDM gets what is left of its deadline after the stages before it."""
from __future__ import annotations

import pytest

from tests.scripts.conftest import load_script


def test_ldm_budget_is_the_rest_of_the_deadline():
    quickstart = load_script("quickstart")
    full, tiny = quickstart.SETTINGS["full"], quickstart.SETTINGS["tiny"]
    reserve = full["deadline_minutes"] - full["tail_minutes"]
    assert quickstart.ldm_minutes(full, 300.0) == pytest.approx(reserve - 5.0)
    assert quickstart.ldm_minutes(full, 450.0) == pytest.approx(reserve - 7.5)  # a slower machine: less
    assert quickstart.ldm_minutes(full, 10_000.0) == 1.0  # never below a minute
    assert quickstart.ldm_minutes(tiny, 300.0) == tiny["ldm_minutes"]  # a fixed budget stays fixed
