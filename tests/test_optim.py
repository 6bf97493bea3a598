"""ldm.optim.build_adam: fused Adam/AdamW where the parameters allow it, same updates as the default."""
import pytest
import torch
from torch import nn

from ldm.optim import build_adam, fusable


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.GELU(), nn.Linear(7, 3))


def _train(opt_factory, steps: int = 5) -> list[torch.Tensor]:
    model = _model()
    opt = opt_factory(model.parameters())
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(4, 5, generator=gen)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("cls, kwargs", [(torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1}),
                                         (torch.optim.Adam, {"lr": 1e-2, "betas": (0.5, 0.9)})])
def test_fused_on_cpu_with_the_default_updates(cls, kwargs):
    opt = build_adam(cls, _model().parameters(), **kwargs)
    assert isinstance(opt, cls) and opt.defaults["fused"] is True
    fused = _train(lambda params: build_adam(cls, params, **kwargs))
    default = _train(lambda params: cls(params, **kwargs))
    for a, b in zip(fused, default):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    start = [p.detach() for p in _model().parameters()]
    assert any(not torch.equal(a, s) for a, s in zip(fused, start))  # the parameters did move


def test_parameter_groups_and_explicit_choices_are_kept():
    model = _model()
    groups = [{"params": model[0].parameters(), "lr": 1e-3}, {"params": model[2].parameters()}]  # generators
    opt = build_adam(torch.optim.AdamW, groups, lr=1e-2)
    assert opt.defaults["fused"] is True and [g["lr"] for g in opt.param_groups] == [1e-3, 1e-2]
    assert [len(g["params"]) for g in opt.param_groups] == [2, 2]
    opt = build_adam(torch.optim.AdamW, model.parameters(), lr=1e-2, foreach=True)
    assert not opt.defaults["fused"] and opt.defaults["foreach"] is True


def test_unfusable_parameters_get_the_default_implementation():
    meta = [nn.Parameter(torch.empty(3, device="meta"))]
    assert not fusable(meta) and not fusable([])
    assert not build_adam(torch.optim.Adam, meta, lr=1e-3).defaults["fused"]
