"""DDIM: replay parity with the original sampler (fixture 7), RNG use, determinism, guidance."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ldm.models.diffusion.ddim as ddim_module
from ldm.models.diffusion.ddim import DDIMSampler
from ldm.modules.diffusionmodules.util import noise_like as real_noise_like
from tests.samplers.conftest import TRAJECTORY_REL, GaussianModel, ReplayModel, build_fixture_model

CASES = ["eta0", "eta0_cfg3", "eta1", "eta1_cfg3"]


def _python_type(value) -> str:
    if isinstance(value, np.ndarray):
        return f"numpy.ndarray:{value.dtype}"
    return f"torch.Tensor:{value.dtype}"


def _run(fixture: dict, case: str, model, seed: bool = True):
    inputs = fixture["inputs"]
    cfg = inputs["cases"][case]
    scale = cfg["guidance_scale"]
    if seed:
        torch.manual_seed(cfg["rng_seed"])
    sampler = DDIMSampler(model)
    samples, inter = sampler.sample(
        S=cfg["S"], batch_size=2, shape=tuple(inputs["x_T"].shape[1:]), conditioning=inputs["conditioning"],
        x_T=inputs["x_T"], eta=cfg["eta"], unconditional_guidance_scale=scale,
        unconditional_conditioning=inputs["unconditional_conditioning"] if scale != 1 else None,
        log_every_t=1, verbose=False)
    return sampler, samples, inter


def _check_outputs(sampler, samples, inter, out, check):
    check(samples, out["samples"], rel=TRAJECTORY_REL, name="samples")
    for key in ("x_inter", "pred_x0"):
        assert len(inter[key]) == out[key].shape[0], key
        for i, (mine, ref) in enumerate(zip(inter[key], out[key], strict=True)):
            check(mine, ref, rel=TRAJECTORY_REL, name=f"{key}[{i}]")
    for name, ref in out["schedule"].items():
        mine = getattr(sampler, name)
        assert _python_type(mine) == out["schedule_python_types"][name], name
        mine = torch.as_tensor(mine)
        assert mine.dtype == ref.dtype, name
        if ref.is_floating_point():
            torch.testing.assert_close(mine.cpu(), ref, rtol=1e-12, atol=0, msg=name)
        else:
            assert torch.equal(mine.cpu(), ref), name


def _expected_model_inputs(fixture: dict, case: str):
    """x and c of every model call: x_inter entries (doubled with guidance), [uc, c] or c."""
    out, inputs = fixture["outputs"][case], fixture["inputs"]
    guided = inputs["cases"][case]["guidance_scale"] != 1
    xs = [torch.cat([x, x]) if guided else x for x in out["x_inter"][:-1]]
    c = torch.cat([inputs["unconditional_conditioning"], inputs["conditioning"]]) if guided else inputs["conditioning"]
    return xs, c


@pytest.mark.parametrize("case", CASES)
def test_ddim_replay_matches_original(case, load_golden, assert_matches_reference, monkeypatch):
    """Recorded model outputs and noise draws in, every intermediate out (fixture 7)."""
    fixture = load_golden("ddim_sampling")
    out = fixture["outputs"][case]
    draws = iter(out["noise_like_draws"])
    calls = []

    def replay_noise(shape, device, repeat=False, dtype=None):
        calls.append(tuple(shape))
        return next(draws).clone()

    monkeypatch.setattr(ddim_module, "noise_like", replay_noise)
    xs, c = _expected_model_inputs(fixture, case)
    model = ReplayModel(fixture["state_dict"], out, expected_x=xs, expected_c=c)
    sampler, samples, inter = _run(fixture, case, model, seed=False)
    assert model.calls == out["model_call_t"].shape[0]
    assert len(calls) == out["noise_like_draws"].shape[0], "noise_like is drawn once per step, even at eta 0"
    _check_outputs(sampler, samples, inter, out, assert_matches_reference)


@pytest.mark.parametrize("case", ["eta1", "eta1_cfg3"])
def test_ddim_consumes_the_rng_like_the_original(case, load_golden, monkeypatch):
    """Seeded as the fixture was, our noise draws are the original's draws, bit for bit."""
    fixture = load_golden("ddim_sampling")
    out = fixture["outputs"][case]
    drawn = []

    def recording_noise(*args, **kwargs):
        drawn.append(real_noise_like(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(ddim_module, "noise_like", recording_noise)
    _run(fixture, case, ReplayModel(fixture["state_dict"], out), seed=True)
    assert torch.equal(torch.stack(drawn), out["noise_like_draws"])


def test_ddim_eta0_is_deterministic(gaussian_model):
    x_T = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # the per-step draws differ, but eta 0 multiplies them by 0
        runs.append(DDIMSampler(gaussian_model).sample(10, 2, (4, 8, 8), x_T=x_T, eta=0.0, verbose=False)[0])
    assert torch.equal(runs[0], runs[1])
    torch.manual_seed(1)
    stochastic = DDIMSampler(gaussian_model).sample(10, 2, (4, 8, 8), x_T=x_T, eta=1.0, verbose=False)[0]
    assert not torch.equal(runs[0], stochastic)


def test_ddim_guidance_scale_one_is_the_conditional_prediction():
    model = GaussianModel()
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    cond, uncond = torch.full((2, 1, 1, 1), 0.7), torch.zeros(2, 1, 1, 1)
    plain, _ = DDIMSampler(model).sample(10, 2, (1, 4, 4), conditioning=cond, x_T=x_T, verbose=False)
    calls = model.calls
    guided, _ = DDIMSampler(model).sample(10, 2, (1, 4, 4), conditioning=cond, x_T=x_T, verbose=False,
                                          unconditional_guidance_scale=1.0, unconditional_conditioning=uncond)
    assert model.calls - calls == calls == 10
    assert torch.equal(plain, guided)
    # scale 3 on a Gaussian model = sampling with mean 3 * 0.7 (eps is linear in the mean)
    cfg3, _ = DDIMSampler(model).sample(10, 2, (1, 4, 4), conditioning=cond, x_T=x_T, verbose=False,
                                        unconditional_guidance_scale=3.0, unconditional_conditioning=uncond)
    ref, _ = DDIMSampler(model).sample(10, 2, (1, 4, 4), conditioning=3 * cond, x_T=x_T, verbose=False)
    torch.testing.assert_close(cfg3, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("parameterization", ["v", "x0"])
def test_ddim_v_and_x0_models_give_the_eps_trajectory(parameterization):
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    ref, _ = DDIMSampler(GaussianModel()).sample(20, 2, (1, 4, 4), x_T=x_T, verbose=False)
    model = GaussianModel(parameterization=parameterization)
    got, _ = DDIMSampler(model).sample(20, 2, (1, 4, 4), x_T=x_T, verbose=False)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_ddim_1000_steps_follows_the_exact_ode(gaussian_model):
    """S = T runs over t = 999..0 (the original indexed past the schedule) and ends at alpha-bar[0]."""
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sampler = DDIMSampler(gaussian_model)
    samples, _ = sampler.sample(1000, 4, (1, 8, 8), x_T=x_T, verbose=False)
    assert sampler.ddim_timesteps[0] == 0 and sampler.ddim_timesteps[-1] == 999
    ac = gaussian_model.alphas_cumprod.double()
    exact = gaussian_model.ode_solution(x_T, float(ac[999]), float(ac[0]))
    assert (samples - exact).abs().max() < 1e-2  # first-order solver: O(1/S) error


def test_ddim_stochastic_encode_and_decode_roundtrip(gaussian_model):
    sampler = DDIMSampler(gaussian_model)
    sampler.make_schedule(50, verbose=False)
    x0 = torch.full((1, 1, 4, 4), 0.3)
    noise = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    t_enc = 25
    z = sampler.stochastic_encode(x0, torch.tensor([t_enc]), noise=noise)
    a = sampler.ddim_alphas[t_enc]
    torch.testing.assert_close(z, a.sqrt() * x0 + (1 - a).sqrt() * noise)
    assert torch.equal(sampler.decode(z, None, 0, verbose=False), z)  # no steps: unchanged
    out = sampler.decode(z, None, t_enc, verbose=False)
    assert out.shape == z.shape and torch.isfinite(out).all()


def test_ddim_inpainting_mask_keeps_known_region(gaussian_model):
    x0 = torch.full((1, 1, 4, 4), 0.9)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1.0  # keep the left half
    torch.manual_seed(0)
    samples, _ = DDIMSampler(gaussian_model).sample(20, 1, (1, 4, 4), mask=mask, x0=x0, verbose=False)
    # the kept region is q_sample(x0, t) at the last step (t = 1), i.e. within its noise of x0
    assert (samples[..., :2] - x0[..., :2]).abs().max() < 0.2


def test_ddim_runs_in_the_model_dtype():
    model = GaussianModel(dtype=torch.float64)
    model.parameters = lambda: iter([torch.zeros(1, dtype=torch.float64)])
    torch.manual_seed(0)
    samples, _ = DDIMSampler(model).sample(5, 1, (1, 4, 4), verbose=False)
    assert samples.dtype == torch.float64


def test_ddim_full_model_matches_original(load_golden, assert_matches_reference):
    """The fixture's tiny LatentDiffusion and weights: samples and every intermediate."""
    fixture = load_golden("ddim_sampling")
    model = build_fixture_model(fixture)
    for case in CASES:
        sampler, samples, inter = _run(fixture, case, model, seed=True)
        _check_outputs(sampler, samples, inter, fixture["outputs"][case], assert_matches_reference)
