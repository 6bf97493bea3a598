"""Noise schedules and the schedule buffers of DDPM / LatentDiffusion (golden `ddpm_schedule`)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ldm.models.diffusion.schedule import (
    SCHEDULE_BUFFERS,
    compute_schedule,
    lvlb_weights,
    make_betas,
)
from ldm.util import instantiate_from_config
from tests.models.tiny import make_ldm


@pytest.fixture(scope="module")
def golden(load_golden):
    return load_golden("ddpm_schedule")


def test_beta_schedules_match_the_original_exactly(golden):
    for name, kwargs in golden["config"]["make_beta_schedule_calls"]:
        kwargs = dict(kwargs)
        betas = make_betas(kwargs.pop("schedule"), kwargs.pop("n_timestep"), **kwargs)
        ref = golden["outputs"]["make_beta_schedule"][name].numpy()
        assert betas.dtype == np.float64
        np.testing.assert_allclose(betas, ref, rtol=1e-12, atol=0, err_msg=name)


@pytest.mark.parametrize("variant", ["sd_v1", "ldm_0.0015_0.0195", "sd_v1_x0", "cosine_v_posterior0.3"])
def test_buffers_and_forward_process_match_the_original(golden, variant, assert_matches_reference):
    model = instantiate_from_config({"target": golden["target"], "params": golden["config"]["ldm"][variant]})
    out = golden["outputs"][variant]
    state = model.state_dict()
    for name, ref in out["buffers"].items():
        if name.startswith("lvlb_weights"):
            actual = model.lvlb_weights
            assert "lvlb_weights" not in state
        elif name.startswith("logvar"):
            actual = model.logvar
            assert "logvar" not in state and not isinstance(model.logvar, torch.nn.Parameter)
        else:
            actual = state[name]
        assert actual.dtype == torch.float32
        assert torch.equal(actual, ref), f"{variant}: buffer {name} differs"
    if variant == "sd_v1":
        assert list(golden["state_dict"]) == list(SCHEDULE_BUFFERS)
        for name, ref in golden["state_dict"].items():
            assert torch.equal(state[name], ref)
    x0, noise, t = golden["inputs"]["x0"], golden["inputs"]["noise"], golden["inputs"]["t"]
    x_t = out["q_sample"]
    assert_matches_reference(model.q_sample(x0, t, noise), x_t, name="q_sample")
    for actual, ref in zip(model.q_mean_variance(x0, t), out["q_mean_variance"]):
        assert_matches_reference(actual, ref, name="q_mean_variance")
    for actual, ref in zip(model.q_posterior(x0, x_t, t), out["q_posterior(x0, q_sample, t)"]):
        assert_matches_reference(actual, ref, name="q_posterior")
    assert_matches_reference(model.predict_start_from_noise(x_t, t, noise),
                             out["predict_start_from_noise(q_sample, t, noise)"], name="predict_start_from_noise")
    assert_matches_reference(model._predict_eps_from_xstart(x_t, t, x0),
                             out["_predict_eps_from_xstart(q_sample, t, x0)"], name="_predict_eps_from_xstart")


def test_posterior_log_variance_is_clipped_at_1e_minus_20():
    schedule = compute_schedule(make_betas("linear", 1000, 0.00085, 0.012))
    assert schedule["posterior_variance"][0] == 0.0
    assert schedule["posterior_log_variance_clipped"][0] == pytest.approx(np.log(1e-20))


def test_zero_terminal_snr_rescaling():
    betas = make_betas("linear", 1000, 0.00085, 0.012)
    rescaled = make_betas("linear", 1000, 0.00085, 0.012, zero_terminal_snr=True)
    ac, ac0 = np.cumprod(1 - rescaled), np.cumprod(1 - betas)
    assert ac[-1] == 0.0
    assert np.sqrt(ac[0]) == pytest.approx(np.sqrt(ac0[0]), rel=1e-12)
    assert np.all(np.diff(ac) < 0)  # still a proper, decreasing schedule
    # sqrt(abar) is an affine map of the original's: shift to 0 at the end, keep the start
    s, s0 = np.sqrt(ac), np.sqrt(ac0)
    expected = (s0 - s0[-1]) * s0[0] / (s0[0] - s0[-1])
    np.testing.assert_allclose(s, expected, rtol=1e-9, atol=1e-12)

    model = make_ldm(zero_terminal_snr=True, parameterization="v")
    assert model.alphas_cumprod[-1].item() == 0.0
    assert model.sqrt_one_minus_alphas_cumprod[-1].item() == 1.0
    assert torch.isfinite(model.lvlb_weights).all()
    # at zero SNR, v = -x0: the x0 prediction from v stays finite and exact
    x0, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.full((2,), 999)
    x_t = model.q_sample(x0, t, noise)
    assert torch.equal(x_t, noise)
    torch.testing.assert_close(model.predict_start_from_z_and_v(x_t, t, model.get_v(x0, noise, t)), x0)


def test_eps_lvlb_weights_stay_finite_with_zero_terminal_snr():
    schedule = compute_schedule(make_betas("linear", 100, zero_terminal_snr=True))
    weights = lvlb_weights(schedule, "eps")
    assert torch.isfinite(weights).all() and weights[-1] == 0


def test_state_dict_layout():
    plain = make_ldm()
    keys = list(plain.state_dict())
    assert keys[:12] == list(SCHEDULE_BUFFERS)
    assert all(plain.state_dict()[k].dtype == torch.float32 for k in SCHEDULE_BUFFERS)
    assert "lvlb_weights" not in keys and "logvar" not in keys and "scale_factor" not in keys
    assert not any(k.startswith("model_ema.") for k in keys)
    assert all(k.startswith(("model.diffusion_model.",) + SCHEDULE_BUFFERS) for k in keys)

    ema = make_ldm(use_ema=True, learn_logvar=True, logvar_init=0.5, scale_by_std=True)
    state = ema.state_dict()
    assert next(iter(state)) == "logvar" and torch.all(state["logvar"] == 0.5)
    assert isinstance(ema.logvar, torch.nn.Parameter)
    assert any(p is ema.logvar for p in ema.trainable_parameters())  # optimized with the network
    assert state["scale_factor"].dtype == torch.float32 and state["scale_factor"].ndim == 0
    assert state["model_ema.decay"].dtype == torch.float32
    assert state["model_ema.num_updates"].dtype == torch.int32
    assert "model_ema.diffusion_modelinput_blocks00weight" in state
    trainable = [n for n, p in ema.model.named_parameters() if p.requires_grad]
    assert len([k for k in state if k.startswith("model_ema.")]) == len(trainable) + 2


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="parameterization"):
        make_ldm(parameterization="mu")
    with pytest.raises(ValueError, match="loss_type"):
        make_ldm(loss_type="huber")
    with pytest.raises(ValueError, match="conditioning_key"):
        make_ldm(conditioning_key="film")
