"""PLMS: replay parity with the original sampler (fixture 8) and its full-model run."""
from __future__ import annotations

import pytest
import torch

import ldm.models.diffusion.plms as plms_module
from ldm.models.diffusion.plms import PLMSSampler, plms_eps
from tests.samplers.conftest import GaussianModel, ReplayModel, build_fixture_model
from tests.samplers.test_ddim import _check_outputs

CASES = ["eta0", "eta0_cfg3"]


def _run(fixture: dict, case: str, model, seed: bool = True):
    inputs = fixture["inputs"]
    cfg = inputs["cases"][case]
    scale = cfg["guidance_scale"]
    if seed:
        torch.manual_seed(cfg["rng_seed"])
    sampler = PLMSSampler(model)
    samples, inter = sampler.sample(
        S=cfg["S"], batch_size=2, shape=tuple(inputs["x_T"].shape[1:]), conditioning=inputs["conditioning"],
        x_T=inputs["x_T"], eta=cfg["eta"], unconditional_guidance_scale=scale,
        unconditional_conditioning=inputs["unconditional_conditioning"] if scale != 1 else None,
        log_every_t=1, verbose=False)
    return sampler, samples, inter


@pytest.mark.parametrize("case", CASES)
def test_plms_replay_matches_original(case, load_golden, assert_matches_reference, monkeypatch):
    """Recorded model outputs in; every model input (x, t, c) and intermediate checked (fixture 8)."""
    fixture = load_golden("plms_sampling")
    out, inputs = fixture["outputs"][case], fixture["inputs"]
    draws = iter(out["noise_like_draws"])
    n_draws = []

    def replay_noise(shape, device, repeat=False, dtype=None):
        n_draws.append(1)
        return next(draws).clone()

    monkeypatch.setattr(plms_module, "noise_like", replay_noise)
    guided = inputs["cases"][case]["guidance_scale"] != 1
    c = torch.cat([inputs["unconditional_conditioning"], inputs["conditioning"]]) if guided else inputs["conditioning"]
    model = ReplayModel(fixture["state_dict"], out, expected_c=c)
    sampler, samples, inter = _run(fixture, case, model, seed=False)
    assert model.calls == 11, "step 1 evaluates twice (pseudo improved Euler), then once per step"
    assert len(n_draws) == 11, "the first step builds x_prev twice, each with a noise_like draw"
    _check_outputs(sampler, samples, inter, out, assert_matches_reference)


def test_plms_rejects_eta(gaussian_model):
    with pytest.raises(ValueError, match="eta must be 0"):
        PLMSSampler(gaussian_model).sample(10, 1, (1, 4, 4), eta=0.5, verbose=False)


def test_plms_adams_bashforth_weights():
    e, e1, e2, e3 = (torch.tensor([float(v)]) for v in (1, 2, 3, 4))
    assert torch.equal(plms_eps(e, []), e)
    assert plms_eps(e, [e1]).item() == (3 * 1 - 2) / 2
    assert plms_eps(e, [e2, e1]).item() == (23 * 1 - 16 * 2 + 5 * 3) / 12
    assert plms_eps(e, [e3, e2, e1]).item() == pytest.approx((55 * 1 - 59 * 2 + 37 * 3 - 9 * 4) / 24)


def test_plms_is_closer_to_the_ode_than_ddim_at_equal_steps(gaussian_model):
    from ldm.models.diffusion.ddim import DDIMSampler

    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ref, _ = DDIMSampler(gaussian_model).sample(500, 4, (1, 8, 8), x_T=x_T, verbose=False)
    plms, _ = PLMSSampler(gaussian_model).sample(20, 4, (1, 8, 8), x_T=x_T, verbose=False)
    ddim, _ = DDIMSampler(gaussian_model).sample(20, 4, (1, 8, 8), x_T=x_T, verbose=False)
    assert (plms - ref).norm() < (ddim - ref).norm()


def test_plms_guidance_scale_one_is_the_conditional_prediction():
    model = GaussianModel()
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    cond, uncond = torch.full((2, 1, 1, 1), 0.7), torch.zeros(2, 1, 1, 1)
    plain, _ = PLMSSampler(model).sample(10, 2, (1, 4, 4), conditioning=cond, x_T=x_T, verbose=False)
    guided, _ = PLMSSampler(model).sample(10, 2, (1, 4, 4), conditioning=cond, x_T=x_T, verbose=False,
                                          unconditional_guidance_scale=1.0, unconditional_conditioning=uncond)
    assert torch.equal(plain, guided)


def test_plms_full_model_matches_original(load_golden, assert_matches_reference):
    fixture = load_golden("plms_sampling")
    model = build_fixture_model(fixture)
    for case in CASES:
        sampler, samples, inter = _run(fixture, case, model, seed=True)
        _check_outputs(sampler, samples, inter, fixture["outputs"][case], assert_matches_reference)
