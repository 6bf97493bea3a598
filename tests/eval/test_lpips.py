"""LPIPS through ldm.modules.losses.lpips.LPIPS, with weight files the test writes."""
from __future__ import annotations

import pytest
import torch

from ldm.eval.lpips import build_lpips, lpips_distance


class _L1(torch.nn.Module):
    """Stand-in with LPIPS's interface: inputs in [-1, 1], output [B, 1, 1, 1]."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        assert a.min() >= -1 and a.max() <= 1
        return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)


def test_images_are_scaled_to_minus_one_one_and_distances_are_per_pair():
    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    y = torch.stack([x[0], torch.full_like(x[0], 255)])
    torch.testing.assert_close(lpips_distance(x, y, _L1()), torch.tensor([0.0, 2.0]))


@pytest.fixture(scope="module")
def lpips_model(tmp_path_factory):
    try:
        from ldm.modules.losses.lpips import LPIPS, VGG16Features  # noqa: F401
    except ImportError as err:
        pytest.skip(f"ldm.modules.losses.lpips is not available yet ({err})")
    folder = tmp_path_factory.mktemp("lpips")
    torch.manual_seed(0)
    torch.save(VGG16Features().state_dict(), folder / "vgg.pth")
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1)
             for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(heads, folder / "lin.pth")
    return build_lpips(vgg_path=str(folder / "vgg.pth"), lin_path=str(folder / "lin.pth"),
                       download=False)


def test_project_lpips_gives_zero_for_identical_and_positive_for_different_images(lpips_model):
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    same = lpips_distance(x, x, lpips_model)
    different = lpips_distance(x, y, lpips_model)
    assert same.shape == (2,) and torch.allclose(same, torch.zeros(2), atol=1e-6)
    assert (different > 0).all()
    expected = lpips_model(x.float() / 127.5 - 1, y.float() / 127.5 - 1).flatten()
    torch.testing.assert_close(different, expected)
    assert not lpips_model.training  # dropout of the heads is off for evaluation


def test_missing_lpips_weights_are_a_one_line_input_error(tmp_path, monkeypatch):
    pytest.importorskip("ldm.modules.losses.lpips")
    import numpy as np
    from PIL import Image

    from ldm.eval.images import InputError
    from ldm.eval.runner import evaluate

    monkeypatch.setenv("LDM_OFFLINE", "1")
    monkeypatch.delenv("LDM_VGG16_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    for i in range(2):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(InputError, match="LPIPS is unavailable") as err:
        evaluate(tmp_path, tmp_path, "lpips")
    assert "\n" not in str(err.value)
