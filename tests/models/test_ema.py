"""LitEma against the original (golden `ema`), and EMA inside the diffusion model."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ldm.modules.ema import LitEma
from tests.models.tiny import make_ldm


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin1 = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.lin2 = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


@pytest.mark.parametrize("mode", ["num_updates", "fixed_decay"])
def test_lit_ema_matches_the_original(load_golden, mode):
    golden = load_golden("ema")
    module = Tiny()
    module.load_state_dict(golden["inputs"]["initial_model_state"])
    ema = LitEma(module, **golden["config"][mode])
    out = golden["outputs"][mode]
    assert list(ema.state_dict()) == list(out["initial_ema_state_dict"])
    for key, ref in out["initial_ema_state_dict"].items():
        assert ema.state_dict()[key].dtype == ref.dtype and torch.equal(ema.state_dict()[key], ref), key
    assert ema.m_name2s_name == out["name_map"]
    for step, deltas in enumerate(golden["inputs"]["deltas"]):
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.add_(deltas[name])
        ema(module)
        state = ema.state_dict()
        for key, ref in out["after_update"][step].items():
            assert torch.equal(state[key], ref), f"update {step + 1}: {key}"
    for name, p in module.named_parameters():
        assert torch.equal(p, out["model_params_after_3_updates"][name])
    target = copy.deepcopy(module)
    ema.copy_to(target)
    for name, value in target.state_dict().items():
        assert torch.equal(value, out["copy_to_result"][name]), name


def test_ema_scope_swaps_and_restores_weights():
    model = make_ldm(use_ema=True)
    with torch.no_grad():
        for p in model.model.parameters():
            p.add_(1.0)  # training moved the weights away from the EMA
    before = [p.detach().clone() for p in model.model.parameters()]
    with model.ema_scope("test"):
        inside = [p.detach().clone() for p in model.model.parameters()]
    after = [p.detach().clone() for p in model.model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert not all(torch.equal(a, b) for a, b in zip(before, inside))
    model.on_train_batch_end(None, None, 0)  # one EMA update (warm-up decay 1/10 -> moves 90 %)
    assert model.model_ema.num_updates.item() == 1
    plain = make_ldm(use_ema=False)
    with plain.ema_scope():
        pass
