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


def test_a_longer_deadline_keeps_the_autoencoders_share():
    quickstart = load_script("quickstart")
    full = quickstart.SETTINGS["full"]
    longer = quickstart.with_deadline(full, 39.0)
    assert longer["deadline_minutes"] == 39.0
    assert longer["ae_minutes"] == pytest.approx(2 * full["ae_minutes"])  # 4 of 19.5 minutes -> 8 of 39
    assert quickstart.ldm_minutes(longer, 330.0, "32") == pytest.approx(39.0 - 2.0 - 5.5)
    assert full["deadline_minutes"] == 19.5  # the defaults are not changed
    with pytest.raises(ValueError, match="tiny run"):
        quickstart.with_deadline(quickstart.SETTINGS["tiny"], 39.0)
    with pytest.raises(ValueError, match="at least 10 minutes"):
        quickstart.with_deadline(full, 5.0)


def test_minutes_is_checked_before_any_training(tmp_path, capsys):
    quickstart = load_script("quickstart")
    with pytest.raises(SystemExit):
        quickstart.main(["--tiny", "--minutes", "30", "--outdir", str(tmp_path / "out")])
    assert "tiny run" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_run_short_of_ldm_steps_names_the_deadline_that_gives_them():
    """The 2-core Ice Lake Xeon without native bf16 (2026-12-08): 1669 LDM steps in 12.58 minutes,
    59.8%. Its rate (132.7 steps a minute) needs 22.6 minutes for 3000: 10.0 more, which a deadline
    gives at 1 - 4/19.5 of each extra minute, so 19.5 + 12.6 -> 33."""
    quickstart = load_script("quickstart")
    full, tiny = quickstart.SETTINGS["full"], quickstart.SETTINGS["tiny"]
    assert full["target_ldm_steps"] == 3000
    assert quickstart.deadline_for_ldm_steps(full, 1669, 12.58) == 33
    # that deadline does give the steps: the LDM's budget grows by what the autoencoder leaves of it
    longer = quickstart.with_deadline(full, 33.0)
    extra = (longer["deadline_minutes"] - full["deadline_minutes"]) - (longer["ae_minutes"] - full["ae_minutes"])
    assert (12.58 + extra) * 1669 / 12.58 >= 3000
    assert quickstart.deadline_for_ldm_steps(full, 3713, 27.84) is None  # enough steps already
    assert quickstart.deadline_for_ldm_steps(tiny, 4, 3.0) is None  # no deadline to extend

    note = quickstart.advice(full, 0.598, 1669, 12.58)
    assert "59.8%" in note and "1669 steps" in note and "--minutes 33" in note
    assert quickstart.advice(full, 0.80, 1669, 12.58) is None  # the target met: nothing to say
    assert quickstart.advice(full, 0.70, 3100, 13.0) is None  # short of 80% with the steps: not a deadline matter
    assert quickstart.advice(tiny, 0.0, 4, 3.0) is None
