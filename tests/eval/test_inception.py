"""The FID Inception v3: published key layout, strict loading, 2048-d features, weight lookup."""
from __future__ import annotations

import urllib.error

import pytest
import torch

from ldm.eval import inception as inception_module
from ldm.eval.inception import (
    FID_WEIGHTS_FILENAME,
    FID_WEIGHTS_URL,
    FIDInceptionV3,
    InceptionV3FeatureExtractor,
    WeightsError,
    resolve_inception_weights,
)

# The 94 conv+BN units of the TF FID graph, named as in the published PyTorch weight files
# (from torch-fidelity's utils/util_convert_inception_weights.py map and pytorch-fid's
# FIDInceptionA/C/E, which patch torchvision's Inception3 with aux_logits=False, 1008 classes).
_STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
_A = ["branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2",
      "branch3x3dbl_3", "branch_pool"]
_B = ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]
_C = ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1",
      "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"]
_D = ["branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3",
      "branch7x7x3_4"]
_E = ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1",
      "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"]
_BLOCKS = {"Mixed_5b": _A, "Mixed_5c": _A, "Mixed_5d": _A, "Mixed_6a": _B, "Mixed_6b": _C,
           "Mixed_6c": _C, "Mixed_6d": _C, "Mixed_6e": _C, "Mixed_7a": _D, "Mixed_7b": _E,
           "Mixed_7c": _E}
UNITS = _STEM + [f"{block}.{branch}" for block, branches in _BLOCKS.items() for branch in branches]
# pytorch-fid's file (a torchvision state_dict) carries BN counters; torch-fidelity's converted
# file has only conv weight + BN weight/bias/running stats.
TORCH_FIDELITY_KEYS = [f"{u}.{s}" for u in UNITS for s in ("conv.weight", "bn.weight", "bn.bias",
                                                            "bn.running_mean", "bn.running_var")]
TORCH_FIDELITY_KEYS += ["fc.weight", "fc.bias"]
PYTORCH_FID_KEYS = TORCH_FIDELITY_KEYS + [f"{u}.bn.num_batches_tracked" for u in UNITS]
SPOT_SHAPES = {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
               "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
               "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1), "fc.weight": (1008, 2048),
               "fc.bias": (1008,)}


def _random_state(keys: list[str]) -> dict[str, torch.Tensor]:
    """Random weights in the published layout (shapes from the model, scaled to stay finite)."""
    shapes = {k: v.shape for k, v in FIDInceptionV3().state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key in keys:
        shape = shapes[key]
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif key.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.1
    return state


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("weights") / FID_WEIGHTS_FILENAME
    torch.save(_random_state(PYTORCH_FID_KEYS), path)
    return str(path)


def test_module_layout_is_the_published_key_layout():
    assert len(UNITS) == 94 and len(PYTORCH_FID_KEYS) == 566 and len(TORCH_FIDELITY_KEYS) == 472
    state = FIDInceptionV3().state_dict()
    assert sorted(state) == sorted(PYTORCH_FID_KEYS)
    for key, shape in SPOT_SHAPES.items():
        assert tuple(state[key].shape) == shape, key


def test_loads_a_pytorch_fid_file_strictly_and_maps_a_batch_to_2048_features(weights_file):
    extractor = InceptionV3FeatureExtractor(weights_path=weights_file)
    expected = torch.load(weights_file, weights_only=True)
    for key in ("Mixed_7c.branch_pool.conv.weight", "fc.weight", "Conv2d_1a_3x3.bn.running_var"):
        assert torch.equal(extractor.net.state_dict()[key], expected[key])
    images = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8)
    with torch.no_grad():
        out = extractor(images)
    assert out["features"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert torch.isfinite(out["features"]).all() and (out["features"] >= 0).all()  # after ReLU
    # logits are "unbiased": fc weight only, as torch-fidelity's Inception Score uses them
    torch.testing.assert_close(out["logits"], out["features"] @ expected["fc.weight"].T)


def test_loads_a_torch_fidelity_file_without_bn_counters(tmp_path):
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(_random_state(TORCH_FIDELITY_KEYS), path)
    net = FIDInceptionV3()
    inception_module.load_inception_weights(net, path)
    assert net.state_dict()["Mixed_5b.branch1x1.bn.num_batches_tracked"].item() == 0


def test_wrong_files_give_one_line_errors_naming_keys(tmp_path):
    state = _random_state(PYTORCH_FID_KEYS)
    state.pop("fc.bias")
    state["AuxLogits.fc.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError) as err:
        inception_module.load_inception_weights(FIDInceptionV3(), tmp_path / "wrong.pth")
    message = str(err.value)
    assert "\n" not in message and "fc.bias" in message and "AuxLogits.fc.weight" in message
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        inception_module.load_inception_weights(FIDInceptionV3(), tmp_path / "garbage.pth")


def test_preprocessing_is_torch_fidelity_s():
    images = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    x = InceptionV3FeatureExtractor.preprocess(images.contiguous())
    assert x.shape == (1, 3, 299, 299)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([-1.0, 0.0, 127 / 128]))
    with pytest.raises(ValueError, match="uint8"):
        InceptionV3FeatureExtractor.preprocess(images.float())


def test_weights_are_found_in_the_cache_dir(tmp_path, weights_file):
    cached = tmp_path / FID_WEIGHTS_FILENAME
    cached.symlink_to(weights_file)
    assert resolve_inception_weights(cache_dir=tmp_path, download=False) == cached


def test_missing_weights_give_a_one_line_error(tmp_path, monkeypatch):
    with pytest.raises(WeightsError) as err:
        resolve_inception_weights(cache_dir=tmp_path, download=False)
    assert "\n" not in str(err.value) and FID_WEIGHTS_URL in str(err.value)
    with pytest.raises(WeightsError, match="no file at"):
        resolve_inception_weights(weights_path=tmp_path / "absent.pth")

    def offline(url, dst, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match="download failed") as err:
        resolve_inception_weights(cache_dir=tmp_path, download=True)
    assert "\n" not in str(err.value)


def test_download_goes_to_the_cache_and_checks_the_hash(tmp_path, monkeypatch):
    seen = []

    def fake_download(url, dst, **kwargs):
        seen.append(url)
        with open(dst, "wb") as f:
            f.write(b"payload whose sha256 does not start with 6726825d")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(WeightsError, match="sha256"):
        resolve_inception_weights(cache_dir=tmp_path, download=True)
    assert seen == [FID_WEIGHTS_URL] and not list(tmp_path.iterdir())  # nothing half-written kept
    monkeypatch.setattr(inception_module, "FID_WEIGHTS_SHA256_PREFIX", None)
    assert resolve_inception_weights(cache_dir=tmp_path).name == FID_WEIGHTS_FILENAME
