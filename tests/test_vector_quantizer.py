"""VectorQuantizer2: nearest codes, losses, straight-through gradients, index options, usage stats."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ldm.modules.vqvae.quantize import VectorQuantizer2, codebook_perplexity
from ldm.util import instantiate_from_config


def _quantizer(n_e: int = 16, e_dim: int = 4, seed: int = 0, **kwargs) -> VectorQuantizer2:
    torch.manual_seed(seed)
    vq = VectorQuantizer2(n_e, e_dim, beta=0.25, **kwargs)
    with torch.no_grad():
        vq.embedding.weight.normal_()
    return vq


def _latents(seed: int = 1, shape=(2, 4, 3, 5)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_taming_target_resolves_to_our_class():
    vq = instantiate_from_config({"target": "taming.modules.vqvae.quantize.VectorQuantizer2",
                                  "params": {"n_e": 8, "e_dim": 3, "beta": 0.25}})
    assert isinstance(vq, VectorQuantizer2)
    assert list(vq.state_dict()) == ["embedding.weight"]  # usage counts are not saved
    assert vq.embedding.weight.abs().max() <= 1.0 / 8


def test_nearest_code_and_output_layout():
    vq = _quantizer()
    z = _latents()
    z_q, _, (perplexity, _, idx) = vq(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    expected = torch.cdist(flat.double(), vq.embedding.weight.double()).argmin(dim=1)
    assert idx.dtype == torch.int64 and idx.shape == (2 * 3 * 5,)
    assert torch.equal(idx, expected)  # row-major over b, h, w
    assert z_q.shape == z.shape
    torch.testing.assert_close(z_q, vq.embedding.weight[idx].view(2, 3, 5, 4).permute(0, 3, 1, 2))
    assert 1.0 <= perplexity.item() <= 16.0


def test_legacy_switch_moves_beta():
    z = _latents()
    legacy, new = _quantizer(legacy=True), _quantizer(legacy=False)
    _, loss_legacy, (_, _, idx) = legacy(z)
    _, loss_new, _ = new(z)
    mse = ((legacy.embedding.weight[idx].view(2, 3, 5, 4).permute(0, 3, 1, 2) - z) ** 2).mean()
    torch.testing.assert_close(loss_legacy, 1.25 * mse)
    torch.testing.assert_close(loss_new, 1.25 * mse)  # same value, different gradients:
    z1 = z.clone().requires_grad_()
    legacy(z1)[1].backward()
    g_legacy_z, g_legacy_e = z1.grad.clone(), legacy.embedding.weight.grad.clone()
    z2 = z.clone().requires_grad_()
    new(z2)[1].backward()
    torch.testing.assert_close(z2.grad, 0.25 * g_legacy_z)  # commitment: beta on z in the new form
    torch.testing.assert_close(new.embedding.weight.grad, 4.0 * g_legacy_e)  # beta on codebook in legacy


def test_straight_through_gradient_is_identity():
    vq = _quantizer()
    z = _latents().requires_grad_()
    z_q, _, _ = vq(z)
    w = torch.randn(z_q.shape, generator=torch.Generator().manual_seed(9))
    (z_q * w).sum().backward()
    torch.testing.assert_close(z.grad, w)


def test_sane_index_shape_and_codebook_entry():
    vq = _quantizer(sane_index_shape=True)
    z = _latents()
    z_q, _, (_, _, idx) = vq(z)
    assert idx.shape == (2, 3, 5)
    entry = vq.get_codebook_entry(idx.reshape(-1), (2, 3, 5, 4))
    torch.testing.assert_close(entry, z_q)
    assert vq.get_codebook_entry(idx.reshape(-1)[:3], None).shape == (3, 4)


@pytest.mark.parametrize("unknown_index", ["extra", 0, "random"])
def test_remap_to_used_codes(tmp_path, unknown_index):
    used = np.array([3, 7, 11])
    path = tmp_path / "used.npy"
    np.save(path, used)
    vq = _quantizer(remap=str(path), unknown_index=unknown_index, sane_index_shape=True)
    assert vq.re_embed == (4 if unknown_index == "extra" else 3)
    with torch.no_grad():  # positions exactly at codes 3, 11 (used) and 5, 6 (not used)
        z = vq.embedding.weight[[3, 11, 5, 6]].view(1, 1, 4, 4).permute(0, 3, 1, 2).contiguous()
    _, _, (_, _, idx) = vq(z)
    assert idx.shape == (1, 1, 4)
    assert idx[0, 0, :2].tolist() == [0, 2]  # positions of 3 and 11 in `used`
    tail = idx[0, 0, 2:].tolist()
    if unknown_index == "extra":
        assert tail == [3, 3]
    elif unknown_index == 0:
        assert tail == [0, 0]
    else:
        assert all(0 <= t < 3 for t in tail)
    back = vq.get_codebook_entry(idx[:, :, :2].reshape(-1), (1, 1, 2, 4))
    torch.testing.assert_close(back, vq.embedding.weight[[3, 11]].view(1, 1, 2, 4).permute(0, 3, 1, 2))


def test_usage_statistics_count_training_batches_only():
    vq = _quantizer(n_e=8, e_dim=2)
    codes = vq.embedding.weight.detach()
    z = codes[[0, 1, 2, 3]].t().reshape(1, 2, 2, 2)  # each of 4 codes exactly once
    vq.eval()
    vq(z)
    assert vq.code_counts.sum() == 0
    vq.train()
    _, _, (perplexity, _, idx) = vq(z)
    assert sorted(idx.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(perplexity, torch.tensor(4.0))
    usage = vq.usage()
    assert usage["codebook_usage"] == pytest.approx(0.5)
    assert usage["perplexity"] == pytest.approx(4.0, rel=1e-5)
    vq.reset_usage()
    assert vq.usage()["codebook_usage"] == 0.0


def test_perplexity_helper():
    assert codebook_perplexity(torch.tensor([5, 0, 0])).item() == pytest.approx(1.0)
    assert codebook_perplexity(torch.tensor([2, 2, 2, 2])).item() == pytest.approx(4.0)


def test_wrong_latent_channels_is_a_clear_error():
    vq = _quantizer()
    with pytest.raises(ValueError, match=r"\[B, 4, H, W\]"):
        vq(torch.zeros(1, 3, 2, 2))
