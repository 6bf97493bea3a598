"""Golden fixtures of the original implementation: `autoencoder_kl.pt` and `vqmodel.pt`
(reference README sections 4 and 5) reproduce with strictly loaded weights."""
from __future__ import annotations

import pytest
import torch

from ldm.models.autoencoder import AutoencoderKL, VQModel, VQModelInterface
from ldm.util import instantiate_from_config


def _build(fixture: dict, target: str | None = None):
    model = instantiate_from_config({"target": target or fixture["target"], "params": fixture["config"]})
    missing, unexpected = model.load_state_dict(fixture["state_dict"], strict=True)
    assert not missing and not unexpected
    return model.eval()


@pytest.fixture(scope="module")
def kl(load_golden):
    return load_golden("autoencoder_kl")


@pytest.fixture(scope="module")
def vq(load_golden):
    return load_golden("vqmodel")


@torch.no_grad()
def test_autoencoder_kl_reproduces(kl, assert_matches_reference):
    model = _build(kl)
    assert isinstance(model, AutoencoderKL)
    out, image = kl["outputs"], kl["inputs"]["image"]
    check = lambda name, value: assert_matches_reference(value, out[name], name=name)

    check("encoder_out", model.encoder(image))
    check("moments", model.quant_conv(model.encoder(image)))
    posterior = model.encode(image)
    check("posterior_mean", posterior.mean)
    check("posterior_logvar", posterior.logvar)
    check("posterior_std", posterior.std)
    check("posterior_var", posterior.var)
    check("posterior_mode", posterior.mode())
    check("posterior_kl", posterior.kl())
    check("decode_mean", model.decode(posterior.mean))
    check("forward_mode_reconstruction", model(image, sample_posterior=False)[0])

    seed = int(kl["inputs"]["sample_seed"])
    torch.manual_seed(seed)
    sample = posterior.sample()
    check("posterior_sample", sample)
    torch.manual_seed(seed)
    check("posterior_sample_noise", torch.randn(posterior.mean.shape))
    check("posterior_nll_of_sample", posterior.nll(sample))
    check("decode_sample", model.decode(sample))
    check("decode_z_random", model.decode(kl["inputs"]["z_random"]))


@torch.no_grad()
def test_vqmodel_reproduces(vq, assert_matches_reference):
    model = _build(vq)
    assert isinstance(model, VQModel)
    out, image = vq["outputs"], vq["inputs"]["image"]
    check = lambda name, value: assert_matches_reference(value, out[name], name=name)

    check("prequant", model.encode_to_prequant(image))
    quant, emb_loss, (_, _, indices) = model.encode(image)
    check("quant", quant)
    check("emb_loss", emb_loss)
    assert indices.dtype == torch.int64
    assert torch.equal(indices, out["indices"]), "VQ indices differ"
    check("decode_quant", model.decode(quant))
    dec, diff = model(image)
    check("forward_dec", dec)
    check("forward_diff", diff)
    b, _, h, w = quant.shape
    check("codebook_entry", model.quantize.get_codebook_entry(indices, (b, h, w, quant.shape[1])))
    check("decode_prequant_unquantized", model.decode(model.encode_to_prequant(image)))
    check("decode_quant", model.decode_code(indices.view(b, h, w)))


@torch.no_grad()
def test_vqmodel_interface_reproduces(vq, assert_matches_reference):
    model = _build(vq, target="ldm.models.autoencoder.VQModelInterface")
    assert isinstance(model, VQModelInterface)
    out, image = vq["outputs"], vq["inputs"]["image"]
    h = model.encode(image)
    assert_matches_reference(h, out["prequant"], name="prequant")
    assert_matches_reference(model.decode(h), out["decode_quant"], name="decode_quant")
    assert_matches_reference(model.decode(h, force_not_quantize=True), out["decode_prequant_unquantized"],
                             name="decode_prequant_unquantized")


@torch.no_grad()
def test_first_stage_api_as_latent_diffusion_uses_it(load_golden, assert_matches_reference):
    """Fixture `ldm_first_stage`: the AutoencoderKL inside a LatentDiffusion, driven the way
    LatentDiffusion drives it (HWC batch -> encode -> scale; decode(z / scale))."""
    fx = load_golden("ldm_first_stage")
    prefix = "first_stage_model."
    sd = {k[len(prefix):]: v for k, v in fx["state_dict"].items() if k.startswith(prefix)}
    model = instantiate_from_config(fx["config"]["first_stage_config"]).eval()
    model.load_state_dict(sd, strict=True)
    out = fx["outputs"]["fixed_scale_factor"]
    scale = out["scale_factor_used"]
    x = model.get_input(fx["inputs"]["batch"], "image")
    posterior = model.encode(x)
    assert_matches_reference(posterior.mean, out["posterior_mean"], name="posterior_mean")
    assert_matches_reference(posterior.logvar, out["posterior_logvar"], name="posterior_logvar")
    assert_matches_reference(scale * posterior.mode(), out["z_mode"], name="z_mode")
    torch.manual_seed(fx["inputs"]["rng_seeds"]["get_first_stage_encoding"])
    assert_matches_reference(scale * posterior.sample(), out["z_sample"], name="z_sample")
    assert_matches_reference(model.decode(out["z_mode"] / scale), out["decode_first_stage_z_mode"],
                             name="decode_first_stage_z_mode")
    assert_matches_reference(model.decode(fx["inputs"]["z_random"] / scale), out["decode_first_stage_z_random"],
                             name="decode_first_stage_z_random")
