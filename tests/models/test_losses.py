"""The training loss: golden `p_losses` and the math of v-prediction, min-SNR and offset noise."""
from __future__ import annotations

import copy

import pytest
import torch

from types import SimpleNamespace

from ldm.models.diffusion.losses import combine_losses, min_snr_offset_at, min_snr_weights, offset_noise
from ldm.util import instantiate_from_config
from tests.models.tiny import make_ldm


@pytest.fixture(scope="module")
def golden(load_golden):
    return load_golden("p_losses")


@pytest.mark.parametrize("variant", ["eps_l2", "x0_l2", "eps_l1", "eps_l2_learnlogvar_elbo"])
def test_p_losses_match_the_original(golden, variant, assert_matches_reference):
    params = copy.deepcopy(golden["config"])
    params.update(golden["config_variants"][variant] or {})
    model = instantiate_from_config({"target": golden["target"], "params": params})
    missing, unexpected = model.load_state_dict(golden["state_dict"], strict=False)
    out = golden["outputs"][variant]
    assert list(missing) == out["missing_keys_when_loading_state_dict"] and not unexpected
    x_start, cond, t, noise = (golden["inputs"][k] for k in ("x_start", "cond", "t", "noise"))
    with torch.no_grad():
        model.train()
        loss, loss_dict = model.p_losses(x_start, cond, t, noise=noise)
        model.eval()
        loss_eval, loss_dict_eval = model.p_losses(x_start, cond, t, noise=noise)
        x_noisy = model.q_sample(x_start, t, noise)
        model_output = model.apply_model(x_noisy, t, cond)
    assert_matches_reference(loss, out["loss"], name="loss")
    assert_matches_reference(loss_eval, out["loss"], name="loss (eval)")
    assert list(loss_dict) == list(out["loss_dict"])
    assert list(loss_dict_eval) == list(out["loss_dict_eval_mode"])
    for key, ref in out["loss_dict"].items():
        assert_matches_reference(loss_dict[key], ref, name=key)
    for key, ref in out["loss_dict_eval_mode"].items():
        assert_matches_reference(loss_dict_eval[key], ref, name=key)
    assert_matches_reference(x_noisy, out["x_noisy"], name="x_noisy")
    assert_matches_reference(model_output, out["model_output"], name="model_output")
    target = noise if model.parameterization == "eps" else x_start
    assert torch.equal(target, out["target"])
    assert torch.equal(model.lvlb_weights[t], out["lvlb_weights_at_t"])
    assert torch.equal(model.logvar[t].detach(), out["logvar_at_t"])


def _with_model_output(model, fn):
    """Replace the network by `fn(x_noisy, t)`."""
    model.apply_model = lambda x_noisy, t, cond=None, return_ids=False: fn(x_noisy, t)
    return model


def test_v_parameterization_identities():
    model = make_ldm(parameterization="v")
    torch.manual_seed(0)
    x0, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([0, 500, 999])
    a = model.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1)
    s = model.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1)
    v = model.get_v(x0, eps, t)
    torch.testing.assert_close(v, a * eps - s * x0)
    x_t = model.q_sample(x0, t, eps)
    torch.testing.assert_close(model.predict_start_from_z_and_v(x_t, t, v), x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.predict_eps_from_z_and_v(x_t, t, v), eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.predict_start_from_model_output(x_t, t, v), x0, atol=1e-5, rtol=1e-5)
    # the training target is v: a network that outputs the true v has zero loss
    _with_model_output(model, lambda x_noisy, tt: model.get_v(x0, eps, tt))
    loss, loss_dict = model.p_losses(x0, None, t, noise=eps)
    assert loss.item() == 0.0 and loss_dict["train/loss_simple"].item() == 0.0
    _with_model_output(model, lambda x_noisy, tt: eps)  # the eps target is wrong for a v model
    assert model.p_losses(x0, None, t, noise=eps)[0].item() > 0.1


def test_min_snr_weights_formula():
    model = make_ldm()
    t = torch.tensor([0, 100, 400, 999])
    ac = model.alphas_cumprod[t].double()
    snr = ac / (1 - ac)
    gamma = 5.0
    expected = {"x0": torch.clamp(snr, max=gamma), "eps": torch.clamp(snr, max=gamma) / snr,
                "v": torch.clamp(snr, max=gamma) / (snr + 1)}
    for param, ref in expected.items():
        torch.testing.assert_close(min_snr_weights(model.alphas_cumprod, t, gamma, param), ref.float())
    eps_w = min_snr_weights(model.alphas_cumprod, t, gamma, "eps")
    assert eps_w[-1] == 1.0 and eps_w[0] < 1e-2  # high-SNR (small t) steps are down-weighted
    zero_snr = torch.tensor([0.9, 0.0])
    assert min_snr_weights(zero_snr, torch.tensor([1]), gamma, "eps").item() == 1.0
    assert min_snr_weights(zero_snr, torch.tensor([1]), gamma, "v").item() == 0.0
    with pytest.raises(ValueError):
        min_snr_weights(model.alphas_cumprod, t, 0.0, "eps")


@pytest.mark.parametrize("offset", [0.1, 1.0])
def test_min_snr_offset(offset):
    """An offset clips SNR + offset, so the x0 error keeps a weight of at least `offset` at
    high noise; 1 is the plain v loss there."""
    model = make_ldm()
    t = torch.tensor([0, 100, 400, 999])
    ac = model.alphas_cumprod[t].double()
    snr = ac / (1 - ac)
    gamma = 5.0
    x0_weight = torch.clamp(snr + offset, max=gamma)
    expected = {"x0": x0_weight, "eps": x0_weight / snr, "v": x0_weight / (snr + 1)}
    for param, ref in expected.items():
        torch.testing.assert_close(min_snr_weights(model.alphas_cumprod, t, gamma, param, offset), ref.float())
    v_weights = min_snr_weights(model.alphas_cumprod, t, gamma, "v", offset)
    assert v_weights[-1] == pytest.approx(offset, rel=0.05)  # high noise: x0 weight ~ offset
    assert v_weights[0] == pytest.approx(gamma / (snr[0] + 1).item())  # low noise: clipped
    paper = min_snr_weights(model.alphas_cumprod, t, gamma, "v")
    assert v_weights[-1] > 5 * paper[-1]  # the paper's form nearly ignores the last steps
    zero_snr = torch.tensor([0.9, 0.0])
    assert min_snr_weights(zero_snr, torch.tensor([1]), gamma, "v", offset).item() == pytest.approx(offset)
    with pytest.raises(ValueError, match="zero-SNR"):
        min_snr_weights(zero_snr, torch.tensor([1]), gamma, "eps", offset)
    with pytest.raises(ValueError, match="min_snr_offset"):
        min_snr_weights(model.alphas_cumprod, t, gamma, "v", -offset)
    with pytest.raises(ValueError, match="min_snr_offset"):
        make_ldm(min_snr_gamma=gamma, min_snr_offset=-offset)
    with pytest.raises(ValueError, match="needs min_snr_gamma"):
        make_ldm(min_snr_offset=offset)
    with pytest.raises(ValueError, match="zero_terminal_snr"):
        make_ldm(min_snr_gamma=gamma, min_snr_offset=offset, zero_terminal_snr=True)
    make_ldm(min_snr_gamma=gamma, min_snr_offset=offset, zero_terminal_snr=True, parameterization="v")


@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_min_snr_weighting_in_p_losses(offset):
    torch.manual_seed(1)
    x0, eps = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    t = torch.tensor([3, 50, 300, 900])
    wrong = torch.randn(4, 4, 8, 8)
    plain = _with_model_output(make_ldm(), lambda x, tt: wrong)
    weighted = _with_model_output(make_ldm(min_snr_gamma=5.0, min_snr_offset=offset), lambda x, tt: wrong)
    loss_plain, dict_plain = plain.p_losses(x0, None, t, noise=eps)
    loss_w, dict_w = weighted.p_losses(x0, None, t, noise=eps)
    per_sample = ((wrong - eps) ** 2).mean(dim=(1, 2, 3))
    w = min_snr_weights(plain.alphas_cumprod, t, 5.0, "eps", offset)
    torch.testing.assert_close(loss_plain, per_sample.mean())
    torch.testing.assert_close(loss_w, (w * per_sample).mean())
    torch.testing.assert_close(dict_w["train/loss_simple"], dict_plain["train/loss_simple"])  # logged unweighted


def test_offset_noise():
    x = torch.zeros(4000, 3, 4, 4)
    torch.manual_seed(0)
    plain = offset_noise(x, 0.0)
    torch.manual_seed(0)
    assert torch.equal(plain, torch.randn_like(x))  # strength 0 is ordinary noise
    strength = 0.5
    noise = offset_noise(x, strength, generator=torch.Generator().manual_seed(1))
    channel_means = noise.mean(dim=(2, 3))  # var = 1/16 (pixel noise) + strength^2 (offset)
    assert channel_means.var().item() == pytest.approx(1 / 16 + strength**2, rel=0.05)
    assert noise.var().item() == pytest.approx(1 + strength**2, rel=0.05)
    assert abs(noise.mean().item()) < 0.03
    model = make_ldm(offset_noise_strength=strength)
    torch.manual_seed(2)
    drawn = model.training_noise(x[:1000])
    assert drawn.mean(dim=(2, 3)).var().item() == pytest.approx(1 / 16 + strength**2, rel=0.1)


def test_loss_combination_with_learned_logvar():
    loss_simple = torch.tensor([1.0, 3.0])
    t = torch.tensor([0, 1])
    logvar = torch.tensor([0.0, 1.0])
    loss, logged = combine_losses(loss_simple, t, logvar=logvar, lvlb_weights=torch.tensor([2.0, 4.0]),
                                  l_simple_weight=0.5, original_elbo_weight=0.1, learn_logvar=True, prefix="val")
    gamma = torch.stack([1.0 / torch.exp(torch.tensor(0.0)), 3.0 / torch.exp(torch.tensor(1.0)) + 1.0]).mean()
    vlb = torch.tensor((2.0 * 1 + 4.0 * 3) / 2)
    torch.testing.assert_close(loss, 0.5 * gamma + 0.1 * vlb)
    assert list(logged) == ["val/loss_simple", "val/loss_gamma", "logvar", "val/loss_vlb", "val/loss"]


def test_min_snr_offset_at_steps():
    """The offset holds for the first `steps` steps, then the paper's weighting (offset 0)."""
    assert [min_snr_offset_at(step, 1.0, 3) for step in range(5)] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert min_snr_offset_at(10**6, 0.3, None) == 0.3
    assert min_snr_offset_at(0, 1.0, 0) == 0.0


def test_min_snr_offset_steps_follow_the_trainer_step():
    """The loss of a model with `min_snr_offset_steps` is that of the offset model before the
    switch and that of the paper's weighting (offset 0) from the switch on."""
    torch.manual_seed(0)
    common = dict(parameterization="v", min_snr_gamma=5.0)
    scheduled = make_ldm(min_snr_offset=1.0, min_snr_offset_steps=3, **common)
    with_offset = make_ldm(min_snr_offset=1.0, **common)
    paper = make_ldm(**common)
    with_offset.load_state_dict(scheduled.state_dict())
    paper.load_state_dict(scheduled.state_dict())
    x = torch.randn(4, scheduled.channels, scheduled.image_size, scheduled.image_size)
    context, t, noise = torch.randn(4, 5, 16), torch.tensor([0, 300, 800, 999]), torch.randn_like(x)

    def loss(model, step=None):
        model._trainer = None if step is None else SimpleNamespace(global_step=step)
        with torch.no_grad():
            return model.p_losses(x, context, t, noise=noise)[0]

    before, after = loss(with_offset), loss(paper)
    assert after < 0.9 * before  # the offset weights the high-noise steps up
    for step in (0, 2):
        torch.testing.assert_close(loss(scheduled, step), before)
    for step in (3, 50):
        torch.testing.assert_close(loss(scheduled, step), after)
    for bad in ({"min_snr_offset_steps": 3}, {"min_snr_offset": 1.0, "min_snr_offset_steps": -1}):
        with pytest.raises(ValueError, match="min_snr_offset_steps"):
            make_ldm(**common, **bad)
