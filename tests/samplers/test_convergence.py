"""Few-step solvers approach the exact probability-flow ODE on Gaussian data (closed-form eps)."""
from __future__ import annotations

import pytest
import torch

from ldm.models.diffusion.ddim import DDIMSampler
from ldm.models.diffusion.dpm_solver import DPMSolverSampler
from ldm.models.diffusion.k_samplers import DiscreteSigmas, KDiffusionSampler, ancestral_step

SHAPE = (1, 32, 32)


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b) ** 2).mean().sqrt().item()


@pytest.fixture(scope="module")
def setup():
    from tests.samplers.conftest import GaussianModel

    model = GaussianModel()
    x_T = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(0))
    ref, _ = DDIMSampler(model).sample(1000, 1, SHAPE, x_T=x_T, verbose=False)
    return model, x_T, ref


def test_ddim_1000_reference_is_close_to_the_exact_solution(setup):
    model, x_T, ref = setup
    ac = model.alphas_cumprod.double()
    assert rms(ref, model.ode_solution(x_T, float(ac[999]), float(ac[0]))) < 3e-3


def test_dpm_solver_converges_to_ddim_1000(setup):
    model, x_T, ref = setup
    errors = {s: rms(DPMSolverSampler(model).sample(s, 1, SHAPE, x_T=x_T, verbose=False)[0], ref)
              for s in (10, 20, 50, 200)}
    assert errors[10] > errors[50] > errors[200]
    assert errors[200] < 5e-3
    # log-SNR spacing: 20 steps beat DDIM-50
    ddim50 = rms(DDIMSampler(model).sample(50, 1, SHAPE, x_T=x_T, verbose=False)[0], ref)
    log_snr20 = rms(DPMSolverSampler(model).sample(20, 1, SHAPE, x_T=x_T, verbose=False, skip_type="logSNR")[0], ref)
    assert log_snr20 < ddim50


def test_dpmpp_2m_karras_converges_to_ddim_1000(setup):
    model, x_T, ref = setup
    sampler = KDiffusionSampler(model, "dpmpp_2m")
    e10, e20, e50 = (rms(sampler.sample(s, 1, SHAPE, x_T=x_T, verbose=False)[0], ref) for s in (10, 20, 50))
    assert e10 > e20 > e50
    assert e20 < 1e-2 and e50 < 4e-3  # the reference ends at alpha-bar[0], this at sigma = 0


def test_euler_without_noise_converges_pathwise(setup):
    model, x_T, ref = setup
    sampler = KDiffusionSampler(model, "euler_ancestral")
    e = [rms(sampler.sample(s, 1, SHAPE, x_T=x_T, verbose=False, ancestral_eta=0.0)[0], ref) for s in (10, 40, 160)]
    assert e[0] > e[1] > e[2] and e[2] < 1e-2


def test_euler_ancestral_converges_in_distribution():
    """Stochastic: the sample mean and std approach the data's (0.3, 0.5) as steps grow."""
    from tests.samplers.conftest import GaussianModel

    model = GaussianModel()
    x_T = torch.randn(4, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    std_err = []
    for steps in (25, 400):
        torch.manual_seed(0)
        samples, _ = KDiffusionSampler(model, "euler_ancestral").sample(steps, 4, (1, 64, 64), x_T=x_T, verbose=False)
        std_err.append(abs(samples.std().item() - model.std))
        assert abs(samples.mean().item() - model.mu) < 0.02
    assert std_err[1] < std_err[0] and std_err[1] < 0.015


def test_sigma_schedules_and_ancestral_split():
    from tests.samplers.conftest import GaussianModel

    table = DiscreteSigmas(GaussianModel().alphas_cumprod)
    for sig in (table.karras(10), table.discrete(10)):
        assert sig.shape == (11,) and sig[-1] == 0 and torch.all(sig[:-1] > sig[1:])
        assert sig[0].item() == pytest.approx(table.sigma_max, rel=1e-5)
    t = torch.tensor([0.0, 10.5, 999.0])
    torch.testing.assert_close(table.sigma_to_t(table.t_to_sigma(t)), t, rtol=1e-4, atol=1e-3)
    down, up = ancestral_step(2.0, 1.0)
    assert down**2 + up**2 == pytest.approx(1.0)
    assert ancestral_step(2.0, 0.0) == (0.0, 0.0)
