"""UNetModel against the golden outputs of the original implementation (reference README, B.1-3).

Same weights (strict load), same inputs: the output and every recorded intermediate (time
embedding, label embedding, each input/middle/output block) within
`|a - b| <= 1e-5 * max|ref| + 1e-6`.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ldm.modules.attention import SpatialTransformer, set_attention_backend
from ldm.modules.diffusionmodules.openaimodel import AttentionBlock, UNetModel
from ldm.util import instantiate_from_config

FIXTURES = ["unet_xattn", "unet_classcond", "unet_concat"]


def record_intermediates(model: UNetModel) -> tuple[dict[str, torch.Tensor], list]:
    """Forward hooks that capture what the fixtures recorded, keyed by the fixtures' names."""
    store: dict[str, torch.Tensor] = {}

    def keep(name: str, from_input: bool = False):
        def hook(module, inputs, output):
            store[name] = inputs[0] if from_input else output
        return hook

    handles = [
        model.time_embed.register_forward_hook(keep("t_emb", from_input=True)),
        model.time_embed.register_forward_hook(keep("emb")),
        model.middle_block.register_forward_hook(keep("middle_block")),
    ]
    if hasattr(model, "label_emb"):
        handles.append(model.label_emb.register_forward_hook(keep("label_emb")))
    for prefix, blocks in (("input_blocks", model.input_blocks), ("output_blocks", model.output_blocks)):
        for i, block in enumerate(blocks):
            handles.append(block.register_forward_hook(keep(f"{prefix}.{i}")))
    return store, handles


def load_model(golden: dict) -> UNetModel:
    model = instantiate_from_config({"target": golden["target"], "params": golden["config"]}).eval()
    assert type(model) is UNetModel
    model.load_state_dict(golden["state_dict"], strict=True)
    return model


def run(model: UNetModel, inputs: dict) -> torch.Tensor:
    extra = {k: inputs[k] for k in ("context", "y") if k in inputs}
    with torch.no_grad():
        return model(inputs["x"], inputs["timesteps"], **extra)


@pytest.mark.parametrize("name", FIXTURES)
def test_state_dict_layout_is_the_released_one(name, load_golden):
    golden = load_golden(name)
    model = UNetModel(**golden["config"])
    expected = {k: tuple(v.shape) for k, v in golden["state_dict"].items()}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert list(model.state_dict()) == list(golden["state_dict"])


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_outputs_and_intermediates_match_the_original(name, backend, load_golden, assert_matches_reference):
    golden = load_golden(name)
    model = set_attention_backend(load_model(golden), backend)
    store, handles = record_intermediates(model)
    eps = run(model, golden["inputs"])
    for h in handles:
        h.remove()
    assert_matches_reference(eps, golden["outputs"]["eps"], name=f"{name}.eps")
    intermediates = golden["outputs"]["intermediates"]
    assert set(intermediates) <= set(store)
    for key, ref in intermediates.items():
        assert_matches_reference(store[key], ref, name=f"{name}.{key}")


def test_concat_input_is_the_wrapper_order(load_golden):
    golden = load_golden("unet_concat")
    parts = golden["inputs"]["x_parts_z_masked_mask"]
    assert torch.equal(torch.cat(list(parts), dim=1), golden["inputs"]["x"])


@pytest.mark.parametrize("name", FIXTURES)
def test_zero_initialized_modules_as_original(name, load_golden):
    golden = load_golden(name)
    torch.manual_seed(0)
    model = UNetModel(**golden["config"])
    zero = [n for n, m in model.named_modules()
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))
            and all(p.abs().max() == 0 for p in m.parameters())]
    assert zero == golden["derived"]["zero_initialized_modules"]


@pytest.mark.parametrize("name", FIXTURES)
def test_attention_layout_as_original(name, load_golden):
    golden = load_golden(name)
    model = UNetModel(**golden["config"])
    layout = []
    for n, m in model.named_modules():
        if isinstance(m, SpatialTransformer):
            attn = m.transformer_blocks[0].attn1
            layout.append({"module": n, "class": "SpatialTransformer", "channels": m.in_channels, "heads": attn.heads,
                           "dim_head": attn.to_q.out_features // attn.heads, "depth": len(m.transformer_blocks),
                           "context_dim": m.transformer_blocks[0].attn2.to_k.in_features})
        elif isinstance(m, AttentionBlock):
            layout.append({"module": n, "class": "AttentionBlock", "channels": m.channels, "heads": m.num_heads,
                           "dim_head": m.channels // m.num_heads,
                           "qkv_attention": type(m.attention).__name__})
    assert layout == golden["derived"]["attention_layout"]
