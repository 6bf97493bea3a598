"""UNet options beyond the LDM releases: SD 2.x layout knobs, reduced precision, codebook head,
EncoderUNetModel, and argument errors."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ldm.modules.attention import SpatialTransformer
from ldm.modules.diffusionmodules.openaimodel import EncoderUNetModel, UNetModel

BASE = dict(image_size=8, in_channels=4, out_channels=4, model_channels=32, attention_resolutions=[1, 2],
            num_res_blocks=1, channel_mult=[1, 2], num_head_channels=16)
XATTN = dict(BASE, use_spatial_transformer=True, context_dim=16)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.data.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def inputs(batch: int = 2, channels: int = 4):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, channels, 8, 8, generator=gen), torch.tensor([1, 700])[:batch]


def test_sd2_options_build_and_run():
    config = dict(XATTN, use_linear_in_transformer=True, num_classes="sequential", adm_in_channels=12,
                  disable_self_attentions=[True, False], num_attention_blocks=[1, 0], num_res_blocks=[1, 2],
                  context_dim=OmegaConf.create([16]), transformer_depth=1)
    model = randomize(UNetModel(**config)).eval()
    state = model.state_dict()
    assert state["label_emb.0.0.weight"].shape == (128, 12)
    assert state["input_blocks.1.1.proj_in.weight"].shape == (32, 32)  # linear projection
    assert model.input_blocks[1][1].transformer_blocks[0].attn1.to_k.in_features == 16  # self-attn disabled
    assert not any(isinstance(m, SpatialTransformer) for m in model.input_blocks[3:])  # 0 blocks at level 1
    assert len(model.input_blocks) == 1 + 1 + 1 + 2 and len(model.output_blocks) == 3 + 2
    x, t = inputs()
    with torch.no_grad():
        out = model(x, t, context=torch.randn(2, 5, 16), y=torch.randn(2, 12))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_class_conditioning_requires_labels():
    model = UNetModel(**BASE, num_classes=10)
    x, t = inputs()
    with pytest.raises(ValueError, match="class-conditional"):
        model(x, t)
    with pytest.raises(ValueError, match="class-conditional"):
        UNetModel(**BASE)(x, t, y=torch.tensor([1, 2]))
    assert UNetModel(**BASE, num_classes="continuous").label_emb.weight.shape == (128, 1)


def test_codebook_prediction_head():
    model = UNetModel(**BASE, n_embed=64)
    x, t = inputs()
    with torch.no_grad():
        assert model(x, t).shape == (2, 64, 8, 8)
    assert model.state_dict()["id_predictor.1.weight"].shape == (64, 32, 1, 1)


@pytest.mark.parametrize("flag,dtype", [("use_bf16", torch.bfloat16), ("use_fp16", torch.float16)])
def test_reduced_precision_torso(flag, dtype):
    torch.manual_seed(0)
    reference = randomize(UNetModel(**XATTN)).eval()
    model = UNetModel(**XATTN, **{flag: True}).eval()
    model.load_state_dict(reference.state_dict())
    assert model.input_blocks[1][0].in_layers[2].weight.dtype == dtype
    assert model.input_blocks[1][0].in_layers[0].weight.dtype == torch.float32  # group norms stay fp32
    assert model.time_embed[0].weight.dtype == torch.float32
    x, t = inputs()
    context = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out, ref = model(x, t, context), reference(x, t, context)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()
    model.convert_to_fp32()
    with torch.no_grad():
        assert torch.allclose(model(x, t, context), ref, atol=1e-2 * ref.abs().max().item())


def test_channels_last_gives_the_same_output():
    model = randomize(UNetModel(**XATTN)).eval()
    x, t = inputs()
    context = torch.randn(2, 5, 16)
    with torch.no_grad():
        ref = model(x, t, context)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last), t, context)
    assert torch.allclose(out, ref, atol=1e-5 * ref.abs().max().item() + 1e-6)


@pytest.mark.parametrize("pool", ["adaptive", "attention", "spatial", "spatial_v2"])
def test_encoder_unet_pool_heads(pool):
    model = EncoderUNetModel(image_size=8, in_channels=3, model_channels=32, out_channels=5, num_res_blocks=1,
                             attention_resolutions=[2], channel_mult=[1, 2], num_head_channels=16, pool=pool)
    randomize(model).eval()
    x, t = inputs(channels=3)
    with torch.no_grad():
        assert model(x, t).shape == (2, 5)


def test_argument_errors():
    with pytest.raises(ValueError, match="context_dim"):
        UNetModel(**dict(BASE, use_spatial_transformer=True))
    with pytest.raises(ValueError, match="use_spatial_transformer"):
        UNetModel(**BASE, context_dim=16)
    with pytest.raises(ValueError, match="num_heads or num_head_channels"):
        UNetModel(**dict(BASE, num_head_channels=-1))
    with pytest.raises(ValueError, match="adm_in_channels"):
        UNetModel(**BASE, num_classes="sequential")
    with pytest.raises(ValueError, match="num_res_blocks"):
        UNetModel(**dict(BASE, num_res_blocks=[1, 2, 3]))
