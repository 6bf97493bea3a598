"""FID: the closed form for Gaussians, self-distance 0, statistics files and their cache."""
from __future__ import annotations

import numpy as np
import pytest

from ldm.eval.fid import (
    FeatureStats,
    fid_from_features,
    fid_from_stats,
    frechet_distance,
    load_or_compute_stats,
    trace_sqrt_product,
)


def test_frechet_distance_of_diagonal_gaussians_matches_closed_form():
    # commuting covariances: d = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = 1.0 + 0.0 + 4.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 0.5) ** 2
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_non_commuting_2d_gaussians():
    # for 2x2 SPD products, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M))
    s1 = np.array([[2.0, 0.5], [0.5, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    m = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    mu1, mu2 = np.array([0.5, -1.0]), np.array([0.0, 2.0])
    expected = 0.25 + 9.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


def test_fid_of_a_set_against_itself_is_zero():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 32)) @ rng.normal(size=(32, 32))
    assert abs(fid_from_features(features, features)) < 1e-8
    # fewer samples than dimensions: a singular covariance must still give 0 (up to the
    # round-off of the ~54 zero eigenvalues' square roots), not NaN
    few = rng.normal(size=(10, 64))
    value = fid_from_features(few, few)
    assert np.isfinite(value) and abs(value) < 1e-6 * np.trace(np.cov(few, rowvar=False))


def test_fid_grows_with_a_mean_shift():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 4))
    shifted = x + np.array([3.0, 0.0, 0.0, 0.0])
    assert fid_from_features(x, shifted) == pytest.approx(9.0, rel=1e-9)


def test_stats_match_numpy_and_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    features = rng.normal(size=(50, 8)).astype(np.float32)
    logits = rng.normal(size=(50, 5)).astype(np.float32)
    stats = FeatureStats.from_features(features, logits, extractor="pixels")
    np.testing.assert_allclose(stats.mu, features.astype(np.float64).mean(0))
    np.testing.assert_allclose(stats.sigma, np.cov(features.astype(np.float64), rowvar=False))
    loaded = FeatureStats.load(stats.save(tmp_path / "stats.npz"))
    assert loaded.extractor == "pixels" and loaded.num_samples == 50
    np.testing.assert_array_equal(loaded.features, features)
    np.testing.assert_array_equal(loaded.logits, logits)
    assert fid_from_stats(loaded, stats) == pytest.approx(0.0, abs=1e-10)


def test_pytorch_fid_style_stats_files_load(tmp_path):
    np.savez(tmp_path / "ref.npz", mu=np.zeros(3), sigma=np.eye(3))
    stats = FeatureStats.load(tmp_path / "ref.npz")
    assert stats.features is None and stats.extractor == ""
    np.savez(tmp_path / "bad.npz", arr_0=np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="no FID statistics"):
        FeatureStats.load(tmp_path / "bad.npz")


def test_stats_of_different_extractors_do_not_mix():
    a = FeatureStats(np.zeros(2), np.eye(2), 10, extractor="inception-v3-compat")
    b = FeatureStats(np.zeros(2), np.eye(2), 10, extractor="pixels")
    with pytest.raises(ValueError, match="different feature extractors"):
        fid_from_stats(a, b)


def test_statistics_are_computed_once_and_recomputed_when_features_are_needed(tmp_path):
    calls = []
    features = np.random.default_rng(3).normal(size=(20, 4))

    def compute(keep: bool = True) -> FeatureStats:
        calls.append(keep)
        return FeatureStats.from_features(features, extractor="pixels", keep_features=keep)

    path = tmp_path / "cache" / "ref.npz"
    load_or_compute_stats(path, lambda: compute(False))
    load_or_compute_stats(path, lambda: compute(False))
    assert calls == [False]
    stats = load_or_compute_stats(path, compute, need_features=True)  # cached file lacks features
    assert calls == [False, True] and stats.features is not None


def test_symmetric_route_equals_torch_fidelitys_eigvals_route():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(80, 24)), rng.normal(size=(90, 24)) * 1.3 + 0.2
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(np.complex128)).real.sum()
    assert trace_sqrt_product(s1, s2) == pytest.approx(reference, rel=1e-10)


def test_low_rank_route_for_few_samples_is_exact():
    rng = np.random.default_rng(5)
    few, many = rng.normal(size=(12, 40)), rng.normal(size=(300, 40)) * 0.7 + 0.1
    full = frechet_distance(few.mean(0), np.cov(few, rowvar=False), many.mean(0),
                            np.cov(many, rowvar=False))
    fast = fid_from_stats(FeatureStats.from_features(few), FeatureStats.from_features(many))
    swapped = fid_from_stats(FeatureStats.from_features(many), FeatureStats.from_features(few))
    assert fast == pytest.approx(full, rel=1e-7) and swapped == pytest.approx(fast, rel=1e-12)
