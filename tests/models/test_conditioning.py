"""Conditions: inputs, DiffusionWrapper routing, conditioning dropout and null conditions."""
from __future__ import annotations

import pytest
import torch

from ldm.models.diffusion.conditioning import ConditioningDropout, replace_rows
from ldm.models.diffusion.wrapper import DiffusionWrapper
from tests.models.tiny import make_ldm


class Recorder(torch.nn.Module):
    def forward(self, x, t, context=None, y=None):
        self.seen = {"x": x, "t": t, "context": context, "y": y}
        return x[:, :4]


@pytest.mark.parametrize("key", [None, "concat", "crossattn", "hybrid", "adm"])
def test_diffusion_wrapper_routes_conditions(key):
    wrapper = DiffusionWrapper({"target": "tests.models.test_conditioning.Recorder"}, key)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    c_concat, c_cross = [torch.ones(2, 1, 8, 8)], [torch.zeros(2, 3, 16), torch.ones(2, 2, 16)]
    wrapper(x, t, c_concat=c_concat, c_crossattn=c_cross)
    seen = wrapper.diffusion_model.seen
    in_channels = 5 if key in ("concat", "hybrid") else 4
    assert seen["x"].shape[1] == in_channels and torch.equal(seen["x"][:, :4], x)
    if key in ("crossattn", "hybrid"):
        assert seen["context"].shape == (2, 5, 16)
    else:
        assert seen["context"] is None
    assert seen["y"] is c_cross[0] if key == "adm" else seen["y"] is None


def test_dropout_rate_and_null_values():
    drop = ConditioningDropout({"txt": {"p": 0.3, "val": ""}, "class_label": {"p": 0.5, "val": 1000},
                                "hint": 1.0}, generator=torch.Generator().manual_seed(0))
    n = 20000
    batch = {"txt": [f"prompt {i}" for i in range(n)], "class_label": torch.arange(n) % 7,
             "hint": torch.ones(n, 2), "image": torch.ones(n, 1)}
    out = drop.apply(batch)
    text_rate = sum(t == "" for t in out["txt"]) / n
    assert text_rate == pytest.approx(0.3, abs=0.015)
    nulled = out["class_label"] == 1000
    assert nulled.float().mean().item() == pytest.approx(0.5, abs=0.015)
    assert torch.equal(out["class_label"][~nulled], batch["class_label"][~nulled])
    assert torch.all(out["hint"] == 0)  # p 1, no value: zeros
    assert out["image"] is batch["image"] and batch["txt"][0] == "prompt 0"  # others and the input untouched
    kept = [a == b for a, b in zip(out["txt"], batch["txt"]) if b != ""]
    assert sum(kept) == pytest.approx(0.7 * n, rel=0.03)
    assert not ConditioningDropout({"txt": 0.0}) and ConditioningDropout({"txt": 0.1})
    with pytest.raises(ValueError):
        ConditioningDropout({"txt": 1.5})


def test_replace_rows_with_an_embedding():
    emb = torch.randn(4, 3, 2)
    null = torch.full((3, 2), 7.0)
    out = replace_rows(emb, torch.tensor([True, False, True, False]), null)
    assert torch.equal(out[0], null) and torch.equal(out[2], null) and torch.equal(out[1], emb[1])


def test_training_step_drops_conditions_and_validation_does_not():
    model = make_ldm(conditioning_dropout={"context": {"p": 1.0, "val": 0.0}})
    seen = []
    model.p_losses = lambda x, c, t, noise=None: (seen.append(c.clone()) or (c.sum() * 0 + x.sum() * 0, {}))
    batch = {"image": torch.randn(2, 8, 8, 4), "context": torch.ones(2, 5, 16)}
    model.log_dict = model.log = lambda *a, **k: None
    model.training_step(batch, 0)
    model.validation_step(batch, 0)
    assert torch.all(seen[0] == 0) and torch.all(seen[1] == 1)


class NullClassEncoder(torch.nn.Module):
    """A class encoder with an explicit null class (as ClassEmbedder with add_null_class)."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(11, 16)

    def forward(self, batch):
        return self.embedding(batch["class_label"].long())[:, None]

    def null_condition(self, batch_size, device=None):
        return {"class_label": torch.full((batch_size,), 10, dtype=torch.long, device=device)}


def test_null_class_from_the_encoder_and_unconditional_conditioning():
    model = make_ldm(cond_stage_key="class_label", cond_stage_trainable=True,
                     cond_stage_config={"target": "tests.models.test_conditioning.NullClassEncoder"},
                     conditioning_dropout={"class_label": 1.0})
    assert model.null_value("class_label").item() == 10
    dropped = model.drop_conditions({"class_label": torch.tensor([1, 2, 3])})
    assert torch.equal(dropped["class_label"], torch.tensor([10, 10, 10]))
    uc = model.get_unconditional_conditioning(3)
    assert uc.shape == (3, 1, 16)
    torch.testing.assert_close(uc, model.cond_stage_model.embedding.weight[10].expand(3, 1, 16))
    explicit = model.get_unconditional_conditioning(2, null_label=4)
    torch.testing.assert_close(explicit[0, 0], model.cond_stage_model.embedding.weight[4])
    assert {id(p) for p in model.cond_stage_model.parameters()} <= {id(p) for p in model.trainable_parameters()}


def test_cached_embeddings_are_dropped_with_the_null_embedding():
    model = make_ldm(cond_stage_key="txt", conditioning_dropout={"txt": {"p": 1.0, "val": "x"}})
    model.cond_stage_model = None
    model.get_learned_conditioning = lambda c: torch.full((len(c), 5, 16), 3.0) if c == ["x"] else None
    batch = {"latent": torch.randn(2, 4, 8, 8), "cond_embedding": torch.randn(2, 5, 16), "txt": ["a", "b"]}
    out = model.drop_conditions(batch)
    assert torch.all(out["cond_embedding"] == 3.0) and out["txt"] == ["a", "b"]
    z, c = model.get_input(out, "image")
    assert torch.equal(c, out["cond_embedding"]) and torch.equal(z, batch["latent"])


def test_conditioning_keys_of_the_original():
    assert make_ldm(conditioning_key=None, concat_mode=True).model.conditioning_key == "concat"
    assert make_ldm(conditioning_key=None, concat_mode=False).model.conditioning_key == "crossattn"
    assert make_ldm(cond_stage_config="__is_unconditional__").model.conditioning_key is None
    with pytest.raises(ValueError, match="cond_stage_trainable"):
        make_ldm(cond_stage_config="__is_first_stage__", cond_stage_trainable=True)


def test_class_dropout_without_a_null_class_is_an_error():
    with pytest.raises(ValueError, match="needs a null value"):
        make_ldm(cond_stage_key="class_label", cond_stage_trainable=True,
                 cond_stage_config={"target": "ldm.modules.encoders.modules.ClassEmbedder",
                                    "params": {"embed_dim": 16, "n_classes": 3, "key": "class_label"}},
                 conditioning_dropout={"class_label": 0.1})


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_cond_stage_lr_scale_gives_the_encoder_its_own_learning_rate(scale):
    encoder = {"target": "tests.models.test_conditioning.NullClassEncoder"}
    model = make_ldm(cond_stage_key="class_label", cond_stage_trainable=True, cond_stage_config=encoder,
                     cond_stage_lr_scale=scale)
    model.learning_rate = 1e-3
    optimizer = model.configure_optimizers()
    lrs = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert len(lrs) == sum(len(group["params"]) for group in optimizer.param_groups)  # no parameter twice
    assert all(lrs[id(p)] == 1e-3 for p in model.model.parameters())
    assert all(lrs[id(p)] == pytest.approx(1e-3 * scale) for p in model.cond_stage_model.parameters())
    assert len(optimizer.param_groups) == (1 if scale == 1.0 else 2)


@pytest.mark.parametrize("bad", [{"cond_stage_trainable": True, "cond_stage_lr_scale": 0.0},
                                 {"cond_stage_trainable": False, "cond_stage_lr_scale": 0.5}])
def test_cond_stage_lr_scale_errors(bad):
    with pytest.raises(ValueError, match="cond_stage_lr_scale"):
        make_ldm(cond_stage_key="class_label", cond_stage_config={"target": "tests.models.test_conditioning.NullClassEncoder"},
                 **bad)
