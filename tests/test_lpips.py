"""LPIPS: weight loading from files in the published layouts, the metric's basic properties,
and the error when weights are missing."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ldm.modules.losses import lpips as lpips_mod
from ldm.modules.losses.lpips import LPIPS, VGG16_LAYERS, LPIPSWeightsError

VGG_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def vgg16_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in torchvision's vgg16 layout (`features.N.*` + classifier), He-init."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    in_ch, idx = 3, 0
    for v in VGG16_LAYERS:
        if v == "M":
            idx += 1
            continue
        sd[f"features.{idx}.weight"] = torch.randn(v, in_ch, 3, 3, generator=g) * (2.0 / (9 * in_ch)) ** 0.5
        sd[f"features.{idx}.bias"] = torch.randn(v, generator=g) * 0.01
        in_ch, idx = v, idx + 2
    sd["classifier.6.weight"] = torch.zeros(10, 4)  # present in the real file, must be ignored
    return sd


def write_vgg16_file(path: Path, seed: int = 0) -> Path:
    """Write a VGG16 file in torchvision's key layout (random weights of the right shapes)."""
    torch.save(vgg16_state_dict(seed), path)
    return path


def write_lin_file(path: Path, seed: int = 1) -> Path:
    """Write LPIPS heads in the published layout (`lin{i}.model.1.weight`, non-negative)."""
    g = torch.Generator().manual_seed(seed)
    sd = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) * 0.1
          for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(sd, path)
    return path


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("lpips")
    return write_vgg16_file(d / "vgg16-397923af.pth"), write_lin_file(d / "vgg.pth")


@pytest.fixture(scope="module")
def lpips_model(weight_files) -> LPIPS:
    vgg, lin = weight_files
    return LPIPS(vgg_path=str(vgg), lin_path=str(lin)).eval()


def _images(seed: int, n: int = 2, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g) * 2 - 1
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)  # smooth images


def test_loads_both_files_in_published_layouts(weight_files, lpips_model):
    vgg, lin = weight_files
    vgg_sd, lin_sd = torch.load(vgg, weights_only=True), torch.load(lin, weights_only=True)
    sd = lpips_model.state_dict()
    for idx in VGG_CONV_INDICES:  # features.N -> net.sliceK.N, same tensors
        key = next(k for k in sd if k.startswith("net.slice") and k.endswith(f".{idx}.weight"))
        assert torch.equal(sd[key], vgg_sd[f"features.{idx}.weight"]), key
    for i in range(5):
        assert torch.equal(sd[f"lin{i}.model.1.weight"], lin_sd[f"lin{i}.model.1.weight"])
    assert "scaling_layer.shift" in sd and "net.slice5.28.bias" in sd
    assert not any(p.requires_grad for p in lpips_model.parameters())


def test_torchmetrics_heads_are_found_and_load(weight_files):
    path = lpips_mod._torchmetrics_lin_file()
    if path is None:
        pytest.skip("torchmetrics is not installed")
    vgg, _ = weight_files
    model = LPIPS(vgg_path=str(vgg), download=False)
    ref = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(model.lin0.model[1].weight, ref["lin0.model.1.weight"].float())
    assert (model.lin4.model[1].weight >= 0).all()


def test_matches_explicit_vgg_computation(weight_files, lpips_model):
    """Recompute LPIPS with F.conv2d straight from the torchvision-layout file: checks the
    slice boundaries (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3), scaling and heads."""
    vgg_sd = torch.load(weight_files[0], weights_only=True)
    lin_sd = torch.load(weight_files[1], weights_only=True)
    x0, x1 = _images(0), _images(1)

    def feats(x):
        x = (x - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        taps, idx = [], 0
        for v in VGG16_LAYERS:
            if v == "M":
                taps.append(x)
                x = F.max_pool2d(x, 2)
                idx += 1
                continue
            x = F.relu(F.conv2d(x, vgg_sd[f"features.{idx}.weight"], vgg_sd[f"features.{idx}.bias"], padding=1))
            idx += 2
        return taps + [x]

    expected = 0
    for i, (a, b) in enumerate(zip(feats(x0), feats(x1))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        expected = expected + F.conv2d((a - b) ** 2, lin_sd[f"lin{i}.model.1.weight"]).mean([2, 3], keepdim=True)
    with torch.no_grad():
        got = lpips_model(x0, x1)
    assert got.shape == (2, 1, 1, 1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_zero_for_identical_symmetric_and_grows_with_distortion(lpips_model):
    x = _images(3)
    g = torch.Generator().manual_seed(4)
    noise = torch.randn(x.shape, generator=g)
    with torch.no_grad():
        assert lpips_model(x, x).abs().max().item() < 1e-6
        y = (x + 0.3 * noise).clamp(-1, 1)
        torch.testing.assert_close(lpips_model(x, y), lpips_model(y, x), rtol=1e-5, atol=1e-7)
        dists = [lpips_model(x, (x + s * noise).clamp(-1, 1)).mean().item() for s in (0.02, 0.1, 0.3, 0.8)]
    assert dists[0] > 0
    assert all(a < b for a, b in itertools.pairwise(dists)), dists


def test_gradient_flows_to_the_second_image(lpips_model):
    x = _images(5)
    y = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(6))).requires_grad_()
    lpips_model(x, y).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_missing_vgg_weights_error_says_how_to_provide_them(tmp_path, monkeypatch, weight_files):
    monkeypatch.delenv(lpips_mod.VGG16_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # empty cache
    with pytest.raises(LPIPSWeightsError) as err:
        LPIPS(lin_path=str(weight_files[1]), download=False)
    msg = str(err.value)
    assert "vgg16-397923af.pth" in msg and lpips_mod.VGG16_ENV in msg and "perceptual_weight: 0" in msg
    assert lpips_mod.VGG16_URL in msg and str(tmp_path / "hub") in msg


def test_offline_env_blocks_download_and_failed_download_is_reported(tmp_path, monkeypatch, weight_files):
    monkeypatch.delenv(lpips_mod.VGG16_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    calls = []

    def fake_download(url, dst, **kwargs):
        calls.append(url)
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    monkeypatch.setenv(lpips_mod.OFFLINE_ENV, "1")
    with pytest.raises(LPIPSWeightsError, match="downloading is disabled"):
        LPIPS(lin_path=str(weight_files[1]))
    assert calls == []
    monkeypatch.delenv(lpips_mod.OFFLINE_ENV)
    with pytest.raises(LPIPSWeightsError, match="network unreachable"):
        LPIPS(lin_path=str(weight_files[1]))
    assert calls == [lpips_mod.VGG16_URL]


def test_weights_found_through_env_and_hub_cache(tmp_path, monkeypatch, weight_files):
    vgg, _ = weight_files
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv(lpips_mod.VGG16_ENV, str(vgg))
    assert lpips_mod.resolve_vgg16_path(download=False) == vgg
    monkeypatch.delenv(lpips_mod.VGG16_ENV)
    cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    cached.symlink_to(vgg)
    assert lpips_mod.resolve_vgg16_path(download=False) == cached
    monkeypatch.setenv(lpips_mod.VGG16_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(LPIPSWeightsError, match="not a file"):
        lpips_mod.resolve_vgg16_path(download=False)


def test_wrong_file_is_rejected_by_name(tmp_path, weight_files):
    bad = tmp_path / "bad.pth"
    sd = vgg16_state_dict()
    del sd["features.28.weight"]
    torch.save(sd, bad)
    with pytest.raises(LPIPSWeightsError, match="slice5.28.weight"):
        LPIPS(vgg_path=str(bad), lin_path=str(weight_files[1]))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(LPIPSWeightsError, match="cannot read"):
        LPIPS(vgg_path=str(garbage), lin_path=str(weight_files[1]))


def test_safetensors_vgg_file_loads(tmp_path, weight_files):
    from safetensors.torch import save_file

    path = tmp_path / "vgg16.safetensors"
    save_file({k: v.contiguous() for k, v in vgg16_state_dict(seed=7).items()}, str(path))
    model = LPIPS(vgg_path=str(path), lin_path=str(weight_files[1]))
    assert torch.equal(model.net.slice1[0].weight, vgg16_state_dict(seed=7)["features.0.weight"])
