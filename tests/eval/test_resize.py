"""Resizing to 299 follows TensorFlow 1.x `resize_bilinear` (torch-fidelity's rules)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ldm.eval.resize import resize_bilinear_tf1


def _tf1_reference(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF's resize_bilinear_op.cc (align_corners=False, half_pixel_centers=False).

    TF keeps the scale and the source coordinate `i * scale` in float32; the lerps are done in
    float64 here, which is why the comparison allows round-off.
    """
    in_h, in_w = image.shape
    scale_y, scale_x = np.float32(in_h / out_h), np.float32(in_w / out_w)
    out = np.empty((out_h, out_w))
    for i in range(out_h):
        sy = float(np.float32(i) * scale_y)
        y0 = int(np.floor(sy))
        y1, fy = min(y0 + 1, in_h - 1), sy - y0
        for j in range(out_w):
            sx = float(np.float32(j) * scale_x)
            x0 = int(np.floor(sx))
            x1, fx = min(x0 + 1, in_w - 1), sx - x0
            top = image[y0, x0] + (image[y0, x1] - image[y0, x0]) * fx
            bottom = image[y1, x0] + (image[y1, x1] - image[y1, x0]) * fx
            out[i, j] = top + (bottom - top) * fy
    return out


def test_upscale_2_to_4_has_no_half_pixel_offset_and_repeats_the_border():
    x = torch.tensor([[[[0.0, 10.0], [20.0, 30.0]]]])
    # source coordinates 0, 0.5, 1, 1.5 -> the last one clamps to the border
    expected = torch.tensor([[[[0.0, 5.0, 10.0, 10.0],
                               [10.0, 15.0, 20.0, 20.0],
                               [20.0, 25.0, 30.0, 30.0],
                               [20.0, 25.0, 30.0, 30.0]]]])
    torch.testing.assert_close(resize_bilinear_tf1(x, (4, 4)), expected)
    assert not torch.allclose(F.interpolate(x, (4, 4), mode="bilinear", align_corners=False), expected)


def test_integer_downscale_picks_pixels_without_averaging():
    x = torch.rand(1, 3, 598, 598) * 255
    torch.testing.assert_close(resize_bilinear_tf1(x, (299, 299)), x[:, :, ::2, ::2])


def test_same_size_is_the_identity():
    x = torch.randint(0, 256, (2, 3, 299, 299)).float()
    assert torch.equal(resize_bilinear_tf1(x, (299, 299)), x)


def test_arbitrary_sizes_match_the_tensorflow_rules():
    rng = np.random.default_rng(0)
    for in_h, in_w in [(37, 53), (256, 256), (512, 384)]:
        image = rng.integers(0, 256, (in_h, in_w)).astype(np.float64)
        ours = resize_bilinear_tf1(torch.from_numpy(image).float()[None, None], (299, 299))[0, 0]
        np.testing.assert_allclose(ours.double().numpy(), _tf1_reference(image, 299, 299), atol=1e-3)
