"""Classifier-free guidance (one batched call, uncond first) and the eps / x0 / v adapter."""
from __future__ import annotations

import pytest
import torch

from ldm.models.diffusion.ddim import DDIMSampler
from ldm.models.diffusion.dpm_solver import DPMSolverSampler
from ldm.models.diffusion.guidance import (
    GuidedModel,
    combine_guidance,
    concat_conditioning,
    eps_from_output,
    guided_output,
    x0_from_output,
)
from ldm.models.diffusion.k_samplers import KDiffusionSampler
from ldm.models.diffusion.plms import PLMSSampler
from tests.samplers.conftest import GaussianModel


class RecordingModel(GaussianModel):
    """A Gaussian model that records the conditioning structure of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = []

    def apply_model(self, x, t, cond):
        self.seen.append((x.shape[0], t.clone(), cond))
        mean = cond["c_crossattn"][0].mean(dim=(1, 2)).reshape(-1, 1, 1, 1) if isinstance(cond, dict) else None
        return super().apply_model(x, t, mean)


def test_concat_conditioning_structures():
    u, c = torch.zeros(2, 3), torch.ones(2, 3)
    assert torch.equal(concat_conditioning(u, c), torch.cat([u, c]))
    out = concat_conditioning([u], [c])
    assert isinstance(out, list) and torch.equal(out[0][:2], u)
    hybrid = concat_conditioning({"c_concat": [u], "c_crossattn": [u + 5]}, {"c_concat": [c], "c_crossattn": [c + 5]})
    assert set(hybrid) == {"c_concat", "c_crossattn"}
    assert torch.equal(hybrid["c_crossattn"][0], torch.cat([u + 5, c + 5]))
    assert concat_conditioning(None, None) is None
    with pytest.raises(ValueError, match="same keys"):
        concat_conditioning({"c_concat": [u]}, {"c_crossattn": [c]})
    with pytest.raises(ValueError, match="list"):
        concat_conditioning([u, u], [c])


def test_guided_output_is_one_batched_call_uncond_first():
    calls = []

    def apply_model(x, t, c):
        calls.append((x.clone(), t.clone(), c.clone()))
        return x * 0 + c[:, :1, None, None]  # output = first feature of the condition

    x, t = torch.randn(2, 1, 2, 2), torch.tensor([5, 5])
    cond, uncond = torch.tensor([[1.0], [2.0]]), torch.tensor([[10.0], [10.0]])
    out = guided_output(apply_model, x, t, cond, uncond, 3.0)
    assert len(calls) == 1
    bx, bt, bc = calls[0]
    assert torch.equal(bx, torch.cat([x, x])) and torch.equal(bt, torch.cat([t, t]))
    assert torch.equal(bc, torch.cat([uncond, cond]))
    expected = combine_guidance(torch.full((2, 1, 2, 2), 10.0), cond.reshape(2, 1, 1, 1).expand(2, 1, 2, 2), 3.0)
    assert torch.equal(out, expected)
    assert torch.equal(out[0, 0, 0, 0], torch.tensor(10 + 3 * (1 - 10.0)))
    calls.clear()
    assert torch.equal(guided_output(apply_model, x, t, cond, uncond, 1.0), cond.reshape(2, 1, 1, 1).expand(2, 1, 2, 2))
    assert len(calls) == 1 and calls[0][0].shape[0] == 2  # scale 1: the conditional call alone


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_parameterization_round_trip(parameterization):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    alpha = torch.tensor([0.9, 0.5, 0.1]).reshape(3, 1)
    sigma = (1 - alpha**2).sqrt()
    x = alpha * x0 + sigma * eps
    out = {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0}[parameterization]
    torch.testing.assert_close(eps_from_output(parameterization, out, x, alpha, sigma), eps)
    torch.testing.assert_close(x0_from_output(parameterization, out, x, alpha, sigma), x0)


def test_guided_model_converts_v_predictions_at_integer_timesteps():
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 700])
    eps_ref = GuidedModel(GaussianModel()).eps(x, t, None)
    eps_v = GuidedModel(GaussianModel(parameterization="v")).eps(x, t, None)
    torch.testing.assert_close(eps_v, eps_ref, rtol=1e-5, atol=1e-5)


SAMPLERS = {
    "ddim": lambda m: DDIMSampler(m),
    "plms": lambda m: PLMSSampler(m),
    "dpm_solver": lambda m: DPMSolverSampler(m),
    "dpmpp_2m_karras": lambda m: KDiffusionSampler(m, "dpmpp_2m"),
    "euler_ancestral": lambda m: KDiffusionSampler(m, "euler_ancestral"),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_batches_dict_conditioning_for_guidance(name):
    """SD-style hybrid dicts: one call per step on 2B rows, each list entry batched uncond first.

    On the Gaussian model guidance with (mu_u, mu_c) = (0, m) equals sampling with mean s * m.
    """
    model = RecordingModel()
    b = 2
    ctx = torch.full((b, 3, 5), 0.4)
    cond = {"c_concat": [torch.ones(b, 1, 4, 4)], "c_crossattn": [ctx]}
    uncond = {"c_concat": [torch.ones(b, 1, 4, 4)], "c_crossattn": [torch.zeros_like(ctx)]}
    x_T = torch.randn(b, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    guided, _ = SAMPLERS[name](model).sample(8, b, (1, 4, 4), conditioning=cond, x_T=x_T, verbose=False,
                                             unconditional_guidance_scale=2.5, unconditional_conditioning=uncond)
    assert all(rows == 2 * b for rows, _, _ in model.seen)
    first = model.seen[0][2]
    assert torch.equal(first["c_crossattn"][0], torch.cat([torch.zeros_like(ctx), ctx]))
    assert first["c_concat"][0].shape[0] == 2 * b
    scaled = {"c_concat": cond["c_concat"], "c_crossattn": [ctx * 2.5]}
    torch.manual_seed(0)
    direct, _ = SAMPLERS[name](RecordingModel()).sample(8, b, (1, 4, 4), conditioning=scaled, x_T=x_T, verbose=False)
    torch.testing.assert_close(guided, direct, rtol=1e-4, atol=1e-4)
