"""Cross-attention, transformer blocks and the UNet's AttentionBlock: backends, numerics, checkpointing."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from einops import rearrange

from ldm.modules.attention import (
    BasicTransformerBlock,
    CrossAttention,
    SpatialTransformer,
    scaled_dot_product,
    set_attention_backend,
)
from ldm.modules.diffusionmodules.openaimodel import AttentionBlock, QKVAttention, QKVAttentionLegacy, UNetModel


def reference_cross_attention(attn: CrossAttention, x, context=None, mask=None):
    """The original's formula: einsum, scale after the product, softmax, einsum."""
    context = x if context is None else context
    h = attn.heads
    q, k, v = attn.to_q(x), attn.to_k(context), attn.to_v(context)
    q, k, v = (rearrange(t, "b n (h d) -> (b h) n d", h=h) for t in (q, k, v))
    sim = torch.einsum("b i d, b j d -> b i j", q, k) * attn.scale
    if mask is not None:
        mask = mask[:, None, :].repeat_interleave(h, dim=0)
        sim = sim.masked_fill(~mask, -torch.finfo(sim.dtype).max)
    out = torch.einsum("b i j, b j d -> b i d", sim.softmax(dim=-1), v)
    return attn.to_out(rearrange(out, "(b h) n d -> b n (h d)", h=h))


def reference_qkv_legacy(qkv, n_heads):
    """The original QKVAttentionLegacy: q and k each scaled by ch^-1/4, float32 softmax."""
    bs, width, length = qkv.shape
    ch = width // (3 * n_heads)
    q, k, v = qkv.reshape(bs * n_heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale).float().softmax(dim=-1)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(bs, -1, length)


def reference_qkv_new_order(qkv, n_heads):
    bs, width, length = qkv.shape
    ch = width // (3 * n_heads)
    q, k, v = qkv.chunk(3, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", (q * scale).reshape(bs * n_heads, ch, length),
                          (k * scale).reshape(bs * n_heads, ch, length)).float().softmax(dim=-1)
    return torch.einsum("bts,bcs->bct", weight, v.reshape(bs * n_heads, ch, length)).reshape(bs, -1, length)


def close(a, b, rel=1e-5):
    return (a - b).abs().max().item() <= rel * b.abs().max().item() + 1e-6


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("with_context", [False, True])
def test_cross_attention_matches_the_original_formula(backend, with_context, gen):
    torch.manual_seed(0)
    attn = CrossAttention(32, context_dim=16 if with_context else None, heads=4, dim_head=8, backend=backend)
    x = torch.randn(2, 10, 32, generator=gen)
    context = torch.randn(2, 7, 16, generator=gen) if with_context else None
    with torch.no_grad():
        assert close(attn(x, context), reference_cross_attention(attn, x, context))


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_cross_attention_mask(backend, gen):
    torch.manual_seed(0)
    attn = CrossAttention(32, context_dim=16, heads=2, dim_head=16, backend=backend)
    x, context = torch.randn(2, 5, 32, generator=gen), torch.randn(2, 6, 16, generator=gen)
    mask = torch.tensor([[True] * 6, [True, True, True, False, False, False]])
    with torch.no_grad():
        out = attn(x, context, mask=mask)
        assert close(out, reference_cross_attention(attn, x, context, mask))
        # masked keys do not matter
        assert close(out[1:], attn(x[1:], context[1:, :3]))


def test_sdpa_and_math_agree(gen):
    q, k, v = (torch.randn(2, 3, 9, 8, generator=gen) for _ in range(3))
    assert close(scaled_dot_product(q, k, v, backend="sdpa"), scaled_dot_product(q, k, v, backend="math"))
    with pytest.raises(ValueError, match="unknown attention backend"):
        scaled_dot_product(q, k, v, backend="flash3")


def test_sdpa_is_the_default():
    assert CrossAttention(8, heads=1, dim_head=8).attention_backend == "sdpa"
    assert AttentionBlock(32, num_heads=2).attention.attention_backend == "sdpa"


def test_context_none_is_self_attention(gen):
    torch.manual_seed(0)
    attn = CrossAttention(32, heads=4, dim_head=8)
    x = torch.randn(2, 10, 32, generator=gen)
    with torch.no_grad():
        assert torch.equal(attn(x), attn(x, context=x))


@pytest.mark.parametrize("cls,reference", [(QKVAttentionLegacy, reference_qkv_legacy),
                                           (QKVAttention, reference_qkv_new_order)])
@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_qkv_attention_matches_the_original_formula(cls, reference, backend, gen):
    qkv = torch.randn(2, 3 * 4 * 8, 20, generator=gen)
    assert close(cls(4, backend=backend)(qkv), reference(qkv, 4))


def test_math_softmax_is_float32_under_autocast(gen):
    torch.manual_seed(0)
    attn = CrossAttention(32, context_dim=16, heads=4, dim_head=8)
    x, context = torch.randn(2, 10, 32, generator=gen), torch.randn(2, 7, 16, generator=gen)
    with torch.no_grad():
        ref = attn(x, context)
        for backend in ("sdpa", "math"):
            attn.attention_backend = backend
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = attn(x, context)
            assert out.dtype == torch.bfloat16
            assert close(out.float(), ref, rel=3e-2)


def test_sdpa_backend_trains_bf16_on_cpu_through_the_math_path(gen, monkeypatch):
    """PyTorch's CPU SDPA backward is several times slower in bf16 than the math path: "sdpa"
    routes reduced-precision CPU tensors that need gradients there, and only those."""
    import ldm.modules.attention as attention

    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention",
                        lambda *a, **kw: calls.append(a[0].dtype) or sdpa(*a, **kw))
    q, k, v = (torch.randn(2, 3, 9, 8, generator=gen, dtype=torch.bfloat16) for _ in range(3))
    reference = scaled_dot_product(q, k, v, backend="math")
    q.requires_grad_(True)
    out = scaled_dot_product(q, k, v, backend="sdpa")
    assert calls == [] and torch.equal(out, reference)
    out.float().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    with torch.no_grad():  # sampling keeps the SDPA kernel
        scaled_dot_product(q, k, v, backend="sdpa")
    scaled_dot_product(q.detach().float().requires_grad_(True), k.float(), v.float(), backend="sdpa")
    assert calls == [torch.bfloat16, torch.float32]


def _grads(module, *inputs):
    module.zero_grad()
    out = module(*inputs)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_checkpointed_transformer_block_gives_equal_grads(gen):
    torch.manual_seed(0)
    block = BasicTransformerBlock(32, 4, 8, context_dim=16, checkpoint=False)
    x, context = torch.randn(2, 10, 32, generator=gen), torch.randn(2, 7, 16, generator=gen)
    out_plain, grads_plain = _grads(block, x, context)
    block.checkpoint = True
    out_ckpt, grads_ckpt = _grads(block, x, context)
    assert torch.equal(out_plain, out_ckpt)
    assert grads_plain.keys() == grads_ckpt.keys() and len(grads_plain) == len(list(block.parameters()))
    for name in grads_plain:
        assert torch.allclose(grads_plain[name], grads_ckpt[name], atol=1e-6), name


def test_checkpointed_unet_gives_equal_grads(gen):
    config = dict(image_size=8, in_channels=4, out_channels=4, model_channels=32, attention_resolutions=[2],
                  num_res_blocks=1, channel_mult=[1, 2], num_heads=2, use_spatial_transformer=True, context_dim=16)
    torch.manual_seed(0)
    plain = UNetModel(**config, use_checkpoint=False)
    for p in plain.parameters():  # undo the zero init so that every gradient flows
        p.data.normal_(0, 0.2, generator=gen)
    ckpt = UNetModel(**config, use_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x, t, context = torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([3, 500]), torch.randn(2, 5, 16, generator=gen)
    out_plain, grads_plain = _grads(plain, x, t, context)
    out_ckpt, grads_ckpt = _grads(ckpt, x, t, context)
    assert torch.allclose(out_plain, out_ckpt, atol=1e-6)
    assert grads_plain.keys() == grads_ckpt.keys()
    for name in grads_plain:
        assert torch.allclose(grads_plain[name], grads_ckpt[name], atol=1e-5), name


def test_attention_block_checkpointing_gives_equal_grads(gen):
    torch.manual_seed(0)
    block = AttentionBlock(32, num_heads=2)
    block.proj_out.weight.data.normal_(generator=gen)
    x = torch.randn(2, 32, 4, 4, generator=gen)
    out_plain, grads_plain = _grads(block, x)
    block.use_checkpoint = True
    out_ckpt, grads_ckpt = _grads(block, x)
    assert torch.equal(out_plain, out_ckpt)
    for name in grads_plain:
        assert torch.allclose(grads_plain[name], grads_ckpt[name], atol=1e-6), name


@pytest.mark.parametrize("use_linear", [False, True])
def test_spatial_transformer_projection_kinds(use_linear, gen):
    torch.manual_seed(0)
    st = SpatialTransformer(64, 4, 16, depth=2, context_dim=[16, 24], use_linear=use_linear)
    expected = [64, 64] if use_linear else [64, 64, 1, 1]
    assert list(st.proj_in.weight.shape) == expected
    assert st.transformer_blocks[1].attn2.to_k.in_features == 24
    x = torch.randn(2, 64, 4, 4, generator=gen)
    contexts = [torch.randn(2, 3, 16, generator=gen), torch.randn(2, 5, 24, generator=gen)]
    with torch.no_grad():
        assert torch.equal(st(x, contexts), x)  # proj_out starts at zero
        st.proj_out.weight.normal_(generator=gen)
        assert st(x, contexts).shape == x.shape


def test_disable_self_attn_attends_to_the_context(gen):
    torch.manual_seed(0)
    block = BasicTransformerBlock(32, 2, 16, context_dim=16, disable_self_attn=True)
    assert block.attn1.to_k.in_features == 16
    x, context = torch.randn(1, 4, 32, generator=gen), torch.randn(1, 3, 16, generator=gen)
    with torch.no_grad():
        assert block(x, context).shape == x.shape


def test_set_attention_backend_switches_every_layer_and_keeps_outputs(gen):
    config = dict(image_size=8, in_channels=4, out_channels=4, model_channels=32, attention_resolutions=[1],
                  num_res_blocks=1, channel_mult=[1], num_heads=2, use_spatial_transformer=True, context_dim=16)
    torch.manual_seed(0)
    model = UNetModel(**config).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.2, generator=gen)
    x, t, context = torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([3, 500]), torch.randn(2, 5, 16, generator=gen)
    with torch.no_grad():
        sdpa = model(x, t, context)
        set_attention_backend(model, "math")
        backends = {m.attention_backend for m in model.modules() if hasattr(m, "attention_backend")}
        assert backends == {"math"}
        assert close(model(x, t, context), sdpa)
    with pytest.raises(ValueError):
        set_attention_backend(copy.deepcopy(model), "xformers")
