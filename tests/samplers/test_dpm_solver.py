"""DPM-Solver++(2M): replay parity with the SD tree's DPMSolverSampler (fixture 13)."""
from __future__ import annotations

import pytest
import torch

from ldm.models.diffusion.dpm_solver import (
    DPMSolverSampler,
    NoiseScheduleVP,
    interpolate_piecewise_linear,
    multistep_order,
    time_steps,
)
from tests.samplers.conftest import TRAJECTORY_REL, GaussianModel, ReplayModel, build_fixture_model

CASES = ["S10", "S10_cfg3", "S20", "S20_cfg3"]


def _run(fixture: dict, case: str, model):
    inputs = fixture["inputs"]
    cfg = inputs["cases"][case]
    scale = cfg["guidance_scale"]
    return DPMSolverSampler(model).sample(
        S=cfg["S"], batch_size=2, shape=tuple(inputs["x_T"].shape[1:]), conditioning=inputs["conditioning"],
        x_T=inputs["x_T"], unconditional_guidance_scale=scale,
        unconditional_conditioning=inputs["unconditional_conditioning"] if scale != 1 else None, verbose=False)


@pytest.mark.parametrize("case", CASES)
def test_dpm_solver_replay_matches_original(case, load_golden, assert_matches_reference):
    """Fractional model times, every model input and the samples (fixture 13)."""
    fixture = load_golden("dpm_solver_sampling")
    out, inputs = fixture["outputs"][case], fixture["inputs"]
    guided = inputs["cases"][case]["guidance_scale"] != 1
    c = torch.cat([inputs["unconditional_conditioning"], inputs["conditioning"]]) if guided else inputs["conditioning"]
    model = ReplayModel(fixture["state_dict"], out, expected_c=c)
    samples, _ = _run(fixture, case, model)
    assert model.calls == inputs["cases"][case]["S"], "NFE = S: no model call at the final time"
    assert_matches_reference(samples, out["samples"], rel=TRAJECTORY_REL, name="samples")


@pytest.mark.parametrize("case", ["S10", "S20"])
def test_dpm_solver_schedule_matches_original(case, load_golden, assert_matches_reference):
    fixture = load_golden("dpm_solver_sampling")
    out = fixture["outputs"][case]
    ns = NoiseScheduleVP("discrete", alphas_cumprod=fixture["state_dict"]["alphas_cumprod"].float())
    steps = time_steps(ns, "time_uniform", 1.0, 1.0 / ns.total_N, fixture["inputs"]["cases"][case]["S"])
    assert steps.dtype == torch.float32
    assert torch.equal(steps, out["time_steps"])
    assert torch.equal(ns.model_time(steps), out["model_input_time"])
    for name in ("marginal_log_mean_coeff", "marginal_alpha", "marginal_std", "marginal_lambda"):
        assert_matches_reference(getattr(ns, name)(steps), out[name], rel=1e-6, name=name)


def test_interpolation_hits_knots_and_extrapolates_linearly():
    xp = torch.tensor([0.0, 1.0, 3.0])
    yp = torch.tensor([0.0, 2.0, 4.0])
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0])
    assert torch.allclose(interpolate_piecewise_linear(x, xp, yp), torch.tensor([-2.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0]))


def test_inverse_lambda_inverts_marginal_lambda():
    ns = NoiseScheduleVP("discrete", alphas_cumprod=GaussianModel().alphas_cumprod)
    t = torch.tensor([0.01, 0.3, 0.77, 0.99])
    torch.testing.assert_close(ns.inverse_lambda(ns.marginal_lambda(t)), t, rtol=1e-4, atol=1e-4)


def test_orders_follow_lower_order_final():
    assert [multistep_order(s, 10) for s in range(1, 11)] == [1] + [2] * 8 + [1]
    assert [multistep_order(s, 20) for s in range(1, 21)] == [1] + [2] * 19


def test_dpm_solver_v_model_matches_eps_model():
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    ref, _ = DPMSolverSampler(GaussianModel()).sample(15, 2, (1, 4, 4), x_T=x_T, verbose=False)
    got, _ = DPMSolverSampler(GaussianModel(parameterization="v")).sample(15, 2, (1, 4, 4), x_T=x_T, verbose=False)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_dpm_solver_guidance_scale_one_is_the_conditional_prediction():
    model = GaussianModel()
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    cond, uncond = torch.full((2, 1, 1, 1), 0.7), torch.zeros(2, 1, 1, 1)
    plain, _ = DPMSolverSampler(model).sample(10, 2, (1, 4, 4), conditioning=cond, x_T=x_T, verbose=False)
    guided, _ = DPMSolverSampler(model).sample(10, 2, (1, 4, 4), conditioning=cond, x_T=x_T, verbose=False,
                                               unconditional_guidance_scale=1.0, unconditional_conditioning=uncond)
    assert torch.equal(plain, guided)


def test_dpm_solver_full_model_matches_original(load_golden, assert_matches_reference):
    fixture = load_golden("dpm_solver_sampling")
    model = build_fixture_model(fixture)
    for case in CASES:
        samples, _ = _run(fixture, case, model)
        assert_matches_reference(samples, fixture["outputs"][case]["samples"], rel=TRAJECTORY_REL, name=case)
