"""The residual statistics the service scores and training calibrates (purifier.suspicion)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from purifier.suspicion import STATISTICS, box3, hf_rms, linf, relative, rms, score


def test_box3_is_the_3x3_mean_with_edges_replicated():
    planes = np.random.default_rng(0).random((2, 17, 23)).astype(np.float32)
    reference = uniform_filter(planes, size=(1, 3, 3), mode="nearest")
    np.testing.assert_allclose(box3(planes), reference, atol=1e-6)


def test_statistics_of_known_residuals():
    rng = np.random.default_rng(1)
    image = rng.random((3, 32, 32)).astype(np.float32) * 0.5 + 0.25
    flat = image + np.float32(0.02)  # the same shift everywhere: no high frequencies
    assert rms(image, flat) == pytest.approx(0.02, rel=1e-4)
    assert linf(image, flat) == pytest.approx(0.02, rel=1e-4)
    assert hf_rms(image, flat) == pytest.approx(0.0, abs=1e-6)
    checker = np.indices((32, 32)).sum(0) % 2 * 2 - 1  # +-1 alternating
    noisy = image + np.float32(0.02) * checker.astype(np.float32)
    assert rms(image, noisy) == pytest.approx(0.02, rel=1e-4)
    assert hf_rms(image, noisy) > 0.015  # a checkerboard is nearly all high frequency
    # relative: the same residual on a flatter image scores higher
    smooth = np.full_like(image, 0.5) + 0.01 * image
    assert relative(smooth, smooth + (noisy - image)) > 10 * relative(image, noisy)


def test_every_statistic_is_per_pixel_not_per_image():
    rng = np.random.default_rng(2)
    small = rng.random((1, 16, 16)).astype(np.float32)
    delta = (rng.random((1, 16, 16)).astype(np.float32) - 0.5) * 0.05
    large, large_delta = np.tile(small, (1, 4, 4)), np.tile(delta, (1, 4, 4))
    for name, statistic in STATISTICS.items():
        a, b = statistic(small, small + delta), statistic(large, large + large_delta)
        assert b == pytest.approx(a, rel=0.15), name


def test_an_unknown_statistic_is_named():
    x = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(KeyError, match="known"):
        score("psnr", x, x)
    assert score("rms", x, x) == 0.0
