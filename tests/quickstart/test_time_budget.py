"""The quickstart's LDM gets what is left of its deadline after the stages before it."""
from __future__ import annotations

import pytest

from tests.scripts.conftest import load_script


@pytest.mark.parametrize("precision", ["bf16-mixed", "32"])
def test_ldm_budget_is_the_rest_of_the_deadline(precision):
    quickstart = load_script("quickstart")
    full, tiny = quickstart.SETTINGS["full"], quickstart.SETTINGS["tiny"]
    reserve = full["deadline_minutes"] - full["tail_minutes"][precision]
    assert quickstart.ldm_minutes(full, 300.0, precision) == pytest.approx(reserve - 5.0)
    assert quickstart.ldm_minutes(full, 450.0, precision) == pytest.approx(reserve - 7.5)  # a slower machine: less
    assert quickstart.ldm_minutes(full, 10_000.0, precision) == 1.0  # never below a minute
    assert quickstart.ldm_minutes(tiny, 300.0, precision) == tiny["ldm_minutes"]  # a fixed budget stays fixed


def test_float32_training_reserves_more_time_after_the_ldm():
    """Without native bf16 the sampling and measuring after the LDM took 120 s (AVX2 EPYC): the
    LDM stops earlier there, so the run keeps its deadline."""
    quickstart = load_script("quickstart")
    full = quickstart.SETTINGS["full"]
    assert quickstart.ldm_minutes(full, 330.0, "32") == pytest.approx(
        quickstart.ldm_minutes(full, 330.0, "bf16-mixed") - 0.75)
    assert set(full["tail_minutes"]) == {"bf16-mixed", "32"}  # every precision choose_precision returns
