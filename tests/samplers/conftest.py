"""Test doubles for the samplers: a model that replays a golden fixture's recorded calls, an
analytic model of Gaussian data (closed-form optimal eps), and the fixtures' tiny LatentDiffusion.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ldm.modules.diffusionmodules.util import make_beta_schedule
from tests.conftest import assert_close_to_reference

TRAJECTORY_REL = 5e-5  # reference README: sampler trajectories


class ReplayModel:
    """Stands in for LatentDiffusion: `apply_model` checks each call against the recording
    (t exactly for integer timesteps, x and the conditioning within tolerance) and returns the
    recorded output, in order.

    Args:
        state_dict: the fixture's state dict (schedule buffers are taken from it).
        recorded: a fixture case: `model_call_t`, `model_call_out`, optionally `model_call_x`.
        expected_x: optional list of x per call when the fixture did not record them.
        expected_c: the conditioning every call must receive.
    """

    parameterization = "eps"

    def __init__(self, state_dict: dict, recorded: dict, expected_x: list | None = None,
                 expected_c: torch.Tensor | None = None) -> None:
        self.betas = state_dict["betas"]
        self.alphas_cumprod = state_dict["alphas_cumprod"]
        self.alphas_cumprod_prev = state_dict["alphas_cumprod_prev"]
        self.num_timesteps = self.betas.shape[0]
        self.recorded = recorded
        self.expected_x = expected_x if expected_x is not None else recorded.get("model_call_x")
        self.expected_c = expected_c
        self.calls = 0

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        i = self.calls
        ts = self.recorded["model_call_t"]
        assert i < ts.shape[0], f"more model calls than recorded ({ts.shape[0]})"
        ref_t = ts[i]
        assert t.dtype == ref_t.dtype, f"call {i}: t dtype {t.dtype} != {ref_t.dtype}"
        if ref_t.is_floating_point():
            assert_close_to_reference(t, ref_t, rel=1e-6, name=f"call {i} t")
        else:
            assert torch.equal(t, ref_t), f"call {i}: t {t.tolist()} != {ref_t.tolist()}"
        if self.expected_x is not None:
            assert_close_to_reference(x, self.expected_x[i], rel=TRAJECTORY_REL, name=f"call {i} x")
        if self.expected_c is not None:
            assert torch.equal(cond, self.expected_c), f"call {i}: conditioning differs"
        self.calls += 1
        return self.recorded["model_call_out"][i].clone()


def interp_alphas_cumprod(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """alpha-bar at (possibly fractional) timesteps, linear between the integer steps."""
    t = t.double().clamp(0, alphas_cumprod.shape[0] - 1)
    lo = t.floor().long().clamp(max=alphas_cumprod.shape[0] - 2)
    w = t - lo
    ac = alphas_cumprod.double()
    return ac[lo] * (1 - w) + ac[lo + 1] * w


class GaussianModel:
    """Exact denoiser for data x0 ~ N(mu, s^2 I): E[eps | x_t] is closed form.

    The conditioning is the mean: a tensor broadcastable against x (None means `mu`). With
    guidance the model is linear in mu, so scale w on (mu_u, mu_c) equals mean
    mu_u + w (mu_c - mu_u). Returns eps, x0 or v according to `parameterization`.
    """

    def __init__(self, std: float = 0.5, mu: float = 0.3, parameterization: str = "eps",
                 timesteps: int = 1000, dtype: torch.dtype = torch.float32) -> None:
        betas = make_beta_schedule("linear", timesteps, 0.00085, 0.012)
        ac = np.cumprod(1.0 - betas)
        self.betas = torch.tensor(betas, dtype=dtype)
        self.alphas_cumprod = torch.tensor(ac, dtype=dtype)
        self.alphas_cumprod_prev = torch.tensor(np.append(1.0, ac[:-1]), dtype=dtype)
        self.num_timesteps = timesteps
        self.std, self.mu = std, mu
        self.parameterization = parameterization
        self.calls = 0

    def exact_eps(self, x: torch.Tensor, t: torch.Tensor, mu) -> torch.Tensor:
        a = interp_alphas_cumprod(self.alphas_cumprod, t).reshape(-1, *([1] * (x.ndim - 1)))
        var = a * self.std**2 + 1 - a
        return ((1 - a).sqrt() * (x.double() - a.sqrt() * mu) / var), a

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        self.calls += 1
        mu = self.mu if cond is None else cond.double()
        eps, a = self.exact_eps(x, t, mu)
        x0 = (x.double() - (1 - a).sqrt() * eps) / a.sqrt()
        out = {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[self.parameterization]
        return out.to(x.dtype)

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        noise = torch.randn_like(x_start) if noise is None else noise
        a = self.alphas_cumprod[t].reshape(-1, *([1] * (x_start.ndim - 1)))
        return a.sqrt() * x_start + (1 - a).sqrt() * noise

    def ode_solution(self, x_T: torch.Tensor, a_start: float, a_end: float, mu=None) -> torch.Tensor:
        """The probability-flow ODE's exact map from alpha-bar `a_start` to `a_end` (affine)."""
        mu = self.mu if mu is None else mu
        s2 = self.std**2
        scale = ((a_end * s2 + 1 - a_end) / (a_start * s2 + 1 - a_start)) ** 0.5
        return (a_end**0.5 * mu + scale * (x_T.double() - a_start**0.5 * mu)).float()


def build_fixture_model(fixture: dict):
    """The fixture's tiny LatentDiffusion with its weights, or skip when the model code is absent."""
    try:
        import ldm.models.autoencoder  # noqa: F401
        import ldm.models.diffusion.ddpm  # noqa: F401
        import ldm.modules.diffusionmodules.openaimodel  # noqa: F401
        from ldm.util import instantiate_from_config
    except ImportError as err:
        pytest.skip(f"full-model parity needs LatentDiffusion, IdentityFirstStage and the UNet: {err}")
    model = instantiate_from_config({"target": fixture["target"], "params": fixture["config"]})
    missing, unexpected = model.load_state_dict(fixture["state_dict"], strict=False)
    assert not unexpected, f"unexpected keys: {unexpected}"
    assert not [k for k in missing if not k.startswith("model_ema")], f"missing keys: {missing}"
    return model.eval()


@pytest.fixture
def gaussian_model():
    return GaussianModel()
