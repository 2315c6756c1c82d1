"""Generative metrics on known distributions (eval.generative)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eval import generative as G


def _normal(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def test_fid_identical_is_zero_and_grows_with_shift() -> None:
    x = _normal(2000, 16, 0)
    assert abs(G.fid(x, x)) < 1e-6
    vals = [G.fid(x, _normal(2000, 16, 1, s)) for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(b > a for a, b in zip(vals, vals[1:])), vals
    # The mean term dominates: |shift|^2 * D for a shift of every coordinate.
    assert vals[-1] == pytest.approx(4.0 * 16, rel=0.1)


def test_frechet_distance_closed_form() -> None:
    mu, sig = np.zeros(3), np.eye(3)
    assert G.frechet_distance(mu, sig, mu + 1.0, 4.0 * sig) == pytest.approx(3.0 + 3.0, abs=1e-9)
    with pytest.raises(ValueError):
        G.frechet_distance(mu, sig, np.zeros(2), np.eye(2))


@pytest.mark.parametrize("degree", [1, 3])
def test_kid_unbiased_and_detects_shift(degree: int) -> None:
    x, y = _normal(2000, 32, 0), _normal(2000, 32, 1)
    n = 30
    mean, std = G.kernel_distance(
        x, y, degree=degree, subsets=n, subset_size=300, generator=torch.Generator().manual_seed(0)
    )
    # Unbiased: the mean over subsets is within a few standard errors of 0 (subsets overlap, so
    # the errors are correlated; 3 SE of independent draws plus a tiny floor is a fair bound).
    assert abs(mean) < 3.0 * std / math.sqrt(n) + 1e-5, (mean, std)
    shifted, sstd = G.kernel_distance(
        x,
        y + 0.5,
        degree=degree,
        subsets=n,
        subset_size=300,
        generator=torch.Generator().manual_seed(0),
    )
    assert shifted > 10 * max(sstd / math.sqrt(n), abs(mean)), (shifted, sstd)


def test_kid_degree1_matches_matrix_form() -> None:
    x, y = _normal(50, 8, 0), _normal(50, 8, 1, 0.3)
    tx, ty = torch.as_tensor(x), torch.as_tensor(y)
    fast = G._mmd2_unbiased(tx, ty, 1, 1 / 8, 1.0)
    kxx, kyy, kxy = (tx @ tx.T / 8 + 1), (ty @ ty.T / 8 + 1), (tx @ ty.T / 8 + 1)
    slow = (
        (kxx.sum() - kxx.trace()) / (50 * 49)
        + (kyy.sum() - kyy.trace()) / (50 * 49)
        - 2 * kxy.mean()
    )
    assert fast == pytest.approx(float(slow), rel=1e-9, abs=1e-12)


def test_precision_recall_identical_and_disjoint() -> None:
    x = _normal(500, 8, 0)
    assert G.precision_recall(x, x) == (1.0, 1.0)
    p, r = G.precision_recall(x, _normal(500, 8, 1, 100.0))
    assert p == 0.0 and r == 0.0
    # Half the fake set on the real manifold, half far away: precision about 1/2, recall high.
    fake = np.concatenate([_normal(250, 8, 2), _normal(250, 8, 3, 100.0)])
    p, r = G.precision_recall(x, fake, max_samples=500)
    assert 0.35 < p < 0.55 and r > 0.5, (p, r)


def test_diversity_seeded() -> None:
    x = _normal(1000, 8, 0)
    a = G.diversity(x, 200, torch.Generator().manual_seed(3))
    b = G.diversity(x, 200, torch.Generator().manual_seed(3))
    c = G.diversity(x, 200, torch.Generator().manual_seed(4))
    assert a == b and a != c
    assert a == pytest.approx(math.sqrt(2 * 8), rel=0.15)  # E|x - y| for N(0, I_8)
    assert G.diversity(2 * x, 200, torch.Generator().manual_seed(3)) == pytest.approx(2 * a)


def test_mean_ci() -> None:
    m, h = G.mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(2.4841377, rel=1e-6)  # t(0.975, 2) * 1 / sqrt(3)
    assert math.isnan(G.mean_ci([5.0])[1])
    with pytest.raises(ValueError):
        G.mean_ci([])


def test_evaluate_generation_keys_and_reproducible() -> None:
    x, y = _normal(600, 8, 0), _normal(600, 8, 1, 0.2)
    r1 = G.evaluate_generation(
        y,
        x,
        torch.Generator().manual_seed(0),
        n_samples=500,
        kid_subsets=10,
        kid_subset_size=200,
        pr_max_samples=300,
    )
    r2 = G.evaluate_generation(
        y,
        x,
        torch.Generator().manual_seed(0),
        n_samples=500,
        kid_subsets=10,
        kid_subset_size=200,
        pr_max_samples=300,
    )
    assert r1 == r2
    assert set(r1) == {
        "fid",
        "kid_mean",
        "kid_std",
        "diversity_fake",
        "diversity_real",
        "precision",
        "recall",
    }
    assert all(math.isfinite(v) for v in r1.values())


def test_bad_input_rejected() -> None:
    with pytest.raises(ValueError):
        G.fid(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError):
        G.diversity(np.full((3, 2), np.nan))
