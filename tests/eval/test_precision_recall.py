"""Precision and recall (Kynkäänniemi et al., k = 3) on hand-computed point clouds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ldm.eval.precision_recall import manifold_radii, precision_recall


def test_radii_are_the_distance_to_the_kth_neighbour():
    points = torch.tensor([[0.0], [1.0], [2.0], [3.0], [50.0]])
    # k = 3: 0 -> {1,2,3} -> 3; 1 -> {1,1,2} -> 2; 2 -> 2; 3 -> 3; 50 -> {47,48,49} -> 49
    expected = torch.tensor([3.0, 2.0, 2.0, 3.0, 49.0]) ** 2
    torch.testing.assert_close(manifold_radii(points, k=3), expected)


def test_precision_and_recall_on_a_constructed_1d_example():
    reference = np.array([0, 1, 2, 3, 50], dtype=np.float32)[:, None]
    samples = np.array([-100, 1, 2, 10, 11, 12, 13], dtype=np.float32)[:, None]
    # reference radii (k=3): 3, 2, 2, 3, 49 -> the outlier 50 covers [1, 99]
    # precision: 1, 2 lie in the balls of 0..3; 10..13 lie in the ball of 50 (|50-13| = 37 <= 49);
    #   -100 lies in none -> 6/7
    # sample radii (k=3): -100 -> 110, 1 -> 10, 2 -> 9, 10 -> 3, 11 -> 2, 12 -> 2, 13 -> 3
    # recall: 0..3 lie in the ball of 1 (radius 10); 50 is in none (37 > 3, 49 > 10, 150 > 110)
    #   -> 4/5
    precision, recall = precision_recall(reference, samples, k=3)
    assert precision == pytest.approx(6 / 7)
    assert recall == pytest.approx(4 / 5)


def test_boundary_counts_as_inside():
    reference = np.array([[0.0], [1.0], [2.0], [3.0]])  # radius of 0 is 3 (k = 3)
    on_boundary = np.array([[-3.0], [-3.0], [-3.0], [-3.0]])
    outside = on_boundary - 0.5
    assert precision_recall(reference, on_boundary, k=3)[0] == 1.0
    assert precision_recall(reference, outside, k=3)[0] == 0.0


def test_identical_sets_have_full_precision_and_recall_and_batching_does_not_matter():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(64, 5))
    assert precision_recall(points, points) == (1.0, 1.0)
    other = rng.normal(size=(50, 5)) + 0.5
    assert precision_recall(points, other, batch_size=7) == precision_recall(points, other)


def test_too_few_points_raise():
    with pytest.raises(ValueError, match="more than k=3"):
        precision_recall(np.zeros((3, 2)), np.zeros((5, 2)))
