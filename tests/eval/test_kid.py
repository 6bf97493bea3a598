"""KID: the unbiased MMD^2 estimator with the cubic kernel, on hand-computed inputs."""
from __future__ import annotations

import numpy as np
import pytest

from ldm.eval.kid import kernel_inception_distance, mmd2_unbiased, polynomial_kernel


def test_unbiased_mmd_on_hand_computed_1d_sets():
    # d = 1, k(x, y) = (x y + 1)^3; X = {0, 1}, Y = {0, 2}
    # off-diagonal K_XX: k(0,1) twice = 2; off-diagonal K_YY: k(0,2) twice = 2
    # K_XY: k(0,0) + k(0,2) + k(1,0) + k(1,2) = 1 + 1 + 1 + 27 = 30
    # MMD^2_u = (2 + 2) / (2 * 1) - 2 * 30 / 4 = -13
    x, y = np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]])
    k = polynomial_kernel
    assert mmd2_unbiased(k(x, x), k(x, y), k(y, y)) == pytest.approx(-13.0)
    mean, std = kernel_inception_distance(x, y, subsets=3, subset_size=2)
    assert mean == pytest.approx(-13.0) and std == pytest.approx(0.0, abs=1e-12)


def test_polynomial_kernel_uses_one_over_dimension():
    x = np.array([[1.0, 2.0]])
    y = np.array([[3.0, 4.0]])
    assert polynomial_kernel(x, y)[0, 0] == pytest.approx((11 / 2 + 1) ** 3)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same, _ = kernel_inception_distance(a, b, subsets=20, subset_size=200)
    shifted, _ = kernel_inception_distance(a, b + 1.0, subsets=20, subset_size=200)
    assert abs(same) < 0.1 and shifted > 1.0


def test_kid_is_deterministic_for_a_seed():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(60, 4))
    assert kernel_inception_distance(a, b, 5, 20) == kernel_inception_distance(a, b, 5, 20)
    assert kernel_inception_distance(a, b, 5, 20) != kernel_inception_distance(a, b, 5, 20, seed=1)


def test_kid_refuses_a_subset_larger_than_the_sets():
    with pytest.raises(ValueError, match="subset size"):
        kernel_inception_distance(np.zeros((5, 2)), np.zeros((5, 2)), subset_size=10)
