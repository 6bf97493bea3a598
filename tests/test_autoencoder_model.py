"""Encoder/Decoder building blocks, the Gaussian posterior, and the autoencoder modules'
non-training API: shapes, input validation, checkpoint loading, EMA, image logging."""
from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from ldm.checkpoint import CheckpointError
from ldm.models.autoencoder import AutoencoderKL, IdentityFirstStage, VQModel, VQModelInterface
from ldm.modules.diffusionmodules.model import (
    AttnBlock,
    Decoder,
    Downsample,
    Encoder,
    LinAttnBlock,
    ResnetBlock,
    Upsample,
    make_attn,
)
from ldm.modules.distributions.distributions import DiagonalGaussianDistribution, normal_kl

DDCONFIG = dict(double_z=True, z_channels=4, resolution=32, in_channels=3, out_ch=3, ch=32,
                ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[16], dropout=0.0)
IDENTITY = {"target": "torch.nn.Identity"}


def _kl(**kwargs) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(ddconfig=DDCONFIG, lossconfig=IDENTITY, embed_dim=4, **kwargs)


def _vq(**kwargs) -> VQModel:
    torch.manual_seed(0)
    return VQModel(ddconfig={**DDCONFIG, "double_z": False, "z_channels": 3}, lossconfig=IDENTITY,
                   n_embed=16, embed_dim=3, **kwargs)


# ---- building blocks ---------------------------------------------------------------------------

def test_attention_block_matches_explicit_softmax_attention():
    torch.manual_seed(0)
    block = AttnBlock(32).eval()
    x = torch.randn(2, 32, 5, 3)
    h = block.norm(x)
    q, k, v = (m(h).flatten(2) for m in (block.q, block.k, block.v))  # [B, C, N]
    w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * 32 ** -0.5, dim=2)  # [B, Nq, Nk]
    ref = x + block.proj_out(torch.bmm(v, w.transpose(1, 2)).view_as(x))
    torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)


def test_linear_attention_block_and_attn_types():
    torch.manual_seed(0)
    block = LinAttnBlock(32)
    x = torch.randn(2, 32, 4, 4)
    qkv = block.to_qkv(x).view(2, 3, 32, 16)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    context = torch.einsum("bdn,ben->bde", k.softmax(-1), v)
    ref = block.to_out(torch.einsum("bde,bdn->ben", context, q).view(2, 32, 4, 4))
    torch.testing.assert_close(block(x), ref)
    assert isinstance(make_attn(32, "vanilla"), AttnBlock)
    assert isinstance(make_attn(32, "none"), torch.nn.Identity)
    with pytest.raises(ValueError, match="attn_type"):
        make_attn(32, "flash")
    enc = Encoder(**{**DDCONFIG, "use_linear_attn": True})
    assert isinstance(enc.mid.attn_1, LinAttnBlock) and isinstance(enc.down[1].attn[0], LinAttnBlock)
    assert not any("attn" in k for k in Encoder(**{**DDCONFIG, "attn_type": "none"}).state_dict())


def test_downsample_pads_right_and_bottom_only():
    down = Downsample(32, with_conv=True)
    x = torch.randn(1, 32, 8, 8)
    ref = F.conv2d(F.pad(x, (0, 1, 0, 1)), down.conv.weight, down.conv.bias, stride=2)
    torch.testing.assert_close(down(x), ref)
    assert down(x).shape == (1, 32, 4, 4)
    torch.testing.assert_close(Downsample(32, with_conv=False)(x), F.avg_pool2d(x, 2))
    up = Upsample(32, with_conv=True)
    torch.testing.assert_close(up(x), up.conv(x.repeat_interleave(2, 2).repeat_interleave(2, 3)))


def test_resnet_block_shortcut_and_temb():
    block = ResnetBlock(in_channels=32, out_channels=64, temb_channels=0)
    assert hasattr(block, "nin_shortcut") and not hasattr(block, "temb_proj")
    assert block(torch.randn(1, 32, 4, 4)).shape == (1, 64, 4, 4)
    assert hasattr(ResnetBlock(in_channels=32, out_channels=64, conv_shortcut=True), "conv_shortcut")
    with_temb = ResnetBlock(in_channels=32, temb_channels=16)
    assert with_temb(torch.randn(1, 32, 4, 4), torch.randn(1, 16)).shape == (1, 32, 4, 4)


def test_encoder_decoder_shapes_and_options():
    enc, dec = Encoder(**DDCONFIG), Decoder(**DDCONFIG)
    x = torch.randn(2, 3, 32, 24)  # non-square works
    moments = enc(x)
    assert moments.shape == (2, 8, 16, 12)
    assert dec(moments[:, :4]).shape == (2, 3, 32, 24)
    assert Decoder(**DDCONFIG, give_pre_end=True)(moments[:, :4]).shape == (2, 32, 32, 24)
    assert Decoder(**DDCONFIG, tanh_out=True)(moments[:, :4] * 100).abs().max() <= 1.0
    assert Encoder(**{**DDCONFIG, "double_z": False})(x).shape == (2, 4, 16, 12)
    assert dec.z_shape == (1, 4, 16, 16)
    with pytest.raises(ValueError, match="multiples of 32"):
        Encoder(**{**DDCONFIG, "ch": 16})


# ---- posterior ---------------------------------------------------------------------------------

def test_diagonal_gaussian():
    torch.manual_seed(0)
    params = torch.randn(2, 8, 3, 3)
    params[:, 4:] = params[:, 4:].clamp(-2, 2)
    p = DiagonalGaussianDistribution(params)
    mean, logvar = params[:, :4], params[:, 4:]
    torch.testing.assert_close(p.mode(), mean)
    torch.testing.assert_close(p.kl(), 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum([1, 2, 3]))
    other = DiagonalGaussianDistribution(torch.cat([mean + 1, logvar], 1))
    torch.testing.assert_close(p.kl(other), torch.full((2,), 0.5) * (1 / logvar.exp()).sum([1, 2, 3]))
    x = torch.randn(2, 4, 3, 3)
    nll = 0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 / logvar.exp()).sum([1, 2, 3])
    torch.testing.assert_close(p.nll(x), nll)
    torch.testing.assert_close(normal_kl(mean, logvar, 0.0, 0.0).sum([1, 2, 3]), p.kl())
    torch.manual_seed(5)
    s = p.sample()
    torch.manual_seed(5)
    torch.testing.assert_close(s, mean + (0.5 * logvar).exp() * torch.randn(mean.shape))
    clamped = DiagonalGaussianDistribution(torch.cat([mean, torch.full_like(mean, 100.0)], 1))
    assert clamped.logvar.max() == 20.0
    det = DiagonalGaussianDistribution(params, deterministic=True)
    torch.testing.assert_close(det.sample(), mean)
    assert det.kl().abs().sum() == 0 and det.nll(x).abs().sum() == 0


# ---- autoencoder modules -----------------------------------------------------------------------

def test_kl_model_roundtrip_shapes_and_bad_inputs():
    model = _kl().eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    posterior = model.encode(x)
    assert posterior.mean.shape == (2, 4, 16, 16)
    rec, post = model(x, sample_posterior=False)
    assert rec.shape == x.shape
    torch.testing.assert_close(rec, model.decode(post.mode()))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\].*divisible by 2.*\[2, 4, 32, 32\]"):
        model.encode(torch.zeros(2, 4, 32, 32))
    with pytest.raises(ValueError, match=r"divisible by 2.*\[1, 3, 33, 32\]"):
        model.encode(torch.zeros(1, 3, 33, 32))
    with pytest.raises(ValueError, match=r"\[B, 4, h, w\]"):
        model.decode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\].*channels-first"):
        model.get_input({"image": torch.zeros(2, 3, 32, 32)}, "image")
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        model.get_input({"image": torch.zeros(2, 32, 32, 4)}, "image")


def test_f8_divisibility_error_names_the_factor():
    model = AutoencoderKL(ddconfig={**DDCONFIG, "ch_mult": [1, 1, 1, 1], "attn_resolutions": []},
                          lossconfig=IDENTITY, embed_dim=4)
    with pytest.raises(ValueError, match=r"divisible by 8 \(the downsampling factor\), got \[1, 3, 36, 36\]"):
        model.encode(torch.zeros(1, 3, 36, 36))


def test_get_input_is_hwc_to_chw():
    model = _kl()
    batch = {"image": torch.rand(2, 32, 16, 3, dtype=torch.float64)}
    x = model.get_input(batch, "image")
    assert x.dtype == torch.float32 and x.shape == (2, 3, 32, 16) and x.is_contiguous()
    torch.testing.assert_close(x[1, 2], batch["image"][1, :, :, 2].float())


def test_vq_model_api_and_interface():
    model = _vq().eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    quant, _, (_, _, ind) = model.encode(x)
    dec, _, ind2 = model(x, return_pred_indices=True)
    assert quant.shape == (2, 3, 16, 16) and ind.shape == (512,) and torch.equal(ind, ind2)
    torch.testing.assert_close(model.decode_code(ind.view(2, 16, 16)), dec)
    iface = VQModelInterface(ddconfig={**DDCONFIG, "double_z": False, "z_channels": 3}, lossconfig=IDENTITY,
                             n_embed=16, embed_dim=3).eval()
    iface.load_state_dict(model.state_dict())
    h = iface.encode(x)
    torch.testing.assert_close(h, model.encode_to_prequant(x))
    torch.testing.assert_close(iface.decode(h), dec)
    torch.testing.assert_close(iface.decode(h, force_not_quantize=True), model.decode(h))
    torch.testing.assert_close(iface(x)[0], dec)


def test_identity_first_stage():
    x = torch.randn(2, 3)
    assert IdentityFirstStage().encode(x) is x and IdentityFirstStage().decode(x) is x
    assert IdentityFirstStage()(x) is x and IdentityFirstStage().quantize(x) is x
    out = IdentityFirstStage(vq_interface=True).quantize(x)
    assert out[0] is x and out[1] is None


def test_init_from_ckpt_ignores_loss_keys_and_reports_mismatches(tmp_path):
    src = _kl()
    sd = {k: v + 1.0 for k, v in src.state_dict().items()}
    sd["loss.logvar"] = torch.zeros(())  # released checkpoints carry loss.* keys
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": sd, "global_step": 7}, path)
    model = _kl(ckpt_path=str(path))
    torch.testing.assert_close(model.encoder.conv_in.weight, sd["encoder.conv_in.weight"])
    # ignore_keys drops keys and does not count them as missing
    model = _kl(ckpt_path=str(path), ignore_keys=["decoder"])
    torch.testing.assert_close(model.encoder.conv_in.weight, sd["encoder.conv_in.weight"])
    assert not torch.equal(model.decoder.conv_in.weight, sd["decoder.conv_in.weight"])
    # a missing key and an unknown extra key are errors naming them
    del sd["quant_conv.bias"]
    sd["something.else"] = torch.zeros(1)
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointError) as err:
        _kl(ckpt_path=str(path))
    assert err.value.missing == ["quant_conv.bias"] and err.value.unexpected == ["something.else"]
    assert "quant_conv" in str(err.value) and "something" in str(err.value)
    # safetensors files load too
    from safetensors.torch import save_file

    st = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(st))
    model = _kl(ckpt_path=str(st))
    torch.testing.assert_close(model.decoder.conv_out.weight, src.decoder.conv_out.weight)


def test_init_from_ckpt_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hparams": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(CheckpointError):
        _kl(ckpt_path=str(path))


def test_ema_keys_scope_and_restore(tmp_path):
    model = _vq(use_ema=True)
    keys = model.state_dict().keys()
    assert "model_ema.decay" in keys and "model_ema.encoderconv_inweight" in keys
    before = model.encoder.conv_in.weight.detach().clone()
    with torch.no_grad():
        model.encoder.conv_in.weight.add_(1.0)
    model.on_train_batch_end()  # one EMA update (decay (1+1)/(10+1) at the first step)
    shadow = model.model_ema.encoderconv_inweight.clone()
    torch.testing.assert_close(shadow, before + (1 - 2 / 11))
    with model.ema_scope():
        torch.testing.assert_close(model.encoder.conv_in.weight, shadow)
    torch.testing.assert_close(model.encoder.conv_in.weight, before + 1.0)
    # a checkpoint without model_ema.* starts the EMA at the loaded weights
    plain = {k: v for k, v in model.state_dict().items() if not k.startswith("model_ema.")}
    torch.save({"state_dict": plain}, tmp_path / "m.ckpt")
    loaded = _vq(use_ema=True, ckpt_path=str(tmp_path / "m.ckpt"))
    torch.testing.assert_close(loaded.model_ema.encoderconv_inweight, before + 1.0)


def test_log_images():
    batch = {"image": torch.rand(2, 32, 32, 3) * 2 - 1}
    logs = _kl().log_images(batch)
    assert set(logs) == {"inputs", "reconstructions", "samples"}
    assert all(v.shape == (2, 3, 32, 32) for v in logs.values())
    assert set(_kl().log_images(batch, only_inputs=True)) == {"inputs"}
    vq_logs = _vq(use_ema=True).log_images(batch, plot_ema=True)
    assert set(vq_logs) == {"inputs", "reconstructions", "reconstructions_ema"}


def test_segmentation_inputs_are_colorized():
    cfg = {**DDCONFIG, "in_channels": 5, "out_ch": 5}
    model = AutoencoderKL(ddconfig=cfg, lossconfig=IDENTITY, embed_dim=4, image_key="segmentation",
                          colorize_nlabels=5)
    assert model.state_dict()["colorize"].shape == (3, 5, 1, 1)
    seg = F.one_hot(torch.randint(0, 5, (2, 32, 32)), 5).float()
    logs = model.log_images({"segmentation": seg})
    assert logs["inputs"].shape == (2, 3, 32, 32)
    assert logs["inputs"].min() >= -1 and logs["inputs"].max() <= 1
