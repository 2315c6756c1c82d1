"""Distribution metrics on feature sets: FID, KID, diversity, improved precision/recall.

These are the generative metrics of InterHandGen (reference doc section 7), computed on feature
vectors (e.g. the 256-D output of :mod:`eval.features`). The paper calls FID "FHID" and KID "KHID".

All randomness comes from a ``torch.Generator`` argument (``None`` means a fresh generator seeded
with 0, so every call is reproducible). Heavy linear algebra runs in float64 with torch/numpy;
nothing loops over pairs of samples in Python.

Differences from the original code, on purpose:

* KID subsets are drawn *without* replacement inside a subset by default (the textbook unbiased
  estimator). InterHandGen's ``kid.py`` draws with replacement whenever ``subset_size < N``,
  which adds a small positive bias; pass ``replace=True`` to reproduce it.
* Precision/recall use chunked ``torch.cdist`` instead of a Python double loop; the k-th
  neighbour radius and the ``d <= radius`` test are the same.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np
import scipy.linalg
import scipy.stats
import torch
from torch import Tensor

log = logging.getLogger(__name__)

ArrayLike = Tensor | np.ndarray


def _feats(name: str, x: ArrayLike, min_rows: int = 2) -> Tensor:
    """Return ``x`` as a (N, D) float64 CPU tensor, with a clear error on bad input."""
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(t.shape)}")
    if t.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {t.shape[0]}")
    t = t.detach().to("cpu", torch.float64)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains non-finite values")
    return t


def _gen(generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(0)


def gaussian_stats(feats: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a feature set.

    Args:
        feats: (N, D) features, N >= 2.
    Returns:
        ``(mu (D,), sigma (D, D))`` float64, unbiased covariance (``np.cov`` convention).
    """
    x = _feats("feats", feats).numpy()
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between two Gaussians ``|mu1-mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``.

    Follows the pytorch-fid recipe: if the matrix square root is singular or not finite, ``eps``
    is added to both diagonals and it is retried; an imaginary part larger than 1e-3 is an error.

    Args:
        mu1, mu2: (D,) means. sigma1, sigma2: (D, D) covariances.
        eps: diagonal regulariser used only when the plain square root fails.
    Returns:
        The distance (float, >= 0 up to round-off).
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"inconsistent Gaussian shapes: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}"
        )
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        log.warning("frechet_distance: singular product, adding %g to the diagonals", eps)
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"frechet_distance: imaginary component {np.max(np.abs(covmean.imag)):.3g}"
            )
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid(real: ArrayLike, fake: ArrayLike, eps: float = 1e-6) -> float:
    """Fréchet (inception-style) distance between two feature sets.

    Args:
        real: (N, D) features. fake: (M, D) features.
    Returns:
        FID (float).
    """
    mu1, s1 = gaussian_stats(real)
    mu2, s2 = gaussian_stats(fake)
    return frechet_distance(mu1, s1, mu2, s2, eps=eps)


def _mmd2_unbiased(x: Tensor, y: Tensor, degree: int, gamma: float, coef0: float) -> float:
    """Unbiased MMD^2 with the kernel ``(gamma <a, b> + coef0) ** degree``; x, y (m, D)."""
    m = x.shape[0]
    if degree == 1:
        # Closed form: sum over i != j of (gamma x_i.x_j + c) without the (m, m) matrix.
        sx, sy = x.sum(0), y.sum(0)
        off_xx = gamma * (sx.dot(sx) - (x * x).sum()) + coef0 * m * (m - 1)
        off_yy = gamma * (sy.dot(sy) - (y * y).sum()) + coef0 * m * (m - 1)
        xy = gamma * sx.dot(sy) + coef0 * m * m
    else:
        kxx = (gamma * (x @ x.T) + coef0) ** degree
        kyy = (gamma * (y @ y.T) + coef0) ** degree
        off_xx = kxx.sum() - kxx.diagonal().sum()
        off_yy = kyy.sum() - kyy.diagonal().sum()
        xy = ((gamma * (x @ y.T) + coef0) ** degree).sum()
    return float((off_xx + off_yy) / (m * (m - 1)) - 2.0 * xy / (m * m))


def kernel_distance(
    real: ArrayLike,
    fake: ArrayLike,
    degree: int = 1,
    gamma: float | None = None,
    coef0: float = 1.0,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
    replace: bool = False,
) -> tuple[float, float]:
    """Kernel (inception-style) distance: unbiased polynomial-kernel MMD^2 over random subsets.

    ``degree=1`` is InterHandGen's current setting (then MMD^2 is a scaled squared difference of
    the subset means); ``degree=3`` is the classic KID of Bińkowski et al.

    Args:
        real: (N, D) features. fake: (M, D) features.
        degree, gamma, coef0: kernel ``(gamma <a, b> + coef0) ** degree``; gamma defaults to 1/D.
        subsets: number of random subsets. subset_size: rows per subset (clipped to min(N, M)).
        generator: source of the subset draws.
        replace: draw rows with replacement inside a subset (InterHandGen's behaviour).
    Returns:
        ``(mean, std)`` of the per-subset MMD^2 values.
    """
    x_all, y_all = _feats("real", real), _feats("fake", fake)
    if x_all.shape[1] != y_all.shape[1]:
        raise ValueError(f"feature sizes differ: real {x_all.shape[1]}, fake {y_all.shape[1]}")
    if degree < 1 or subsets < 1:
        raise ValueError(f"degree and subsets must be >= 1, got {degree}, {subsets}")
    g = _gen(generator)
    gamma = 1.0 / x_all.shape[1] if gamma is None else float(gamma)
    m = min(subset_size, x_all.shape[0], y_all.shape[0])
    if m < 2:
        raise ValueError(f"subset_size must be >= 2, got {m}")
    vals = np.empty(subsets)
    for i in range(subsets):
        if replace:
            ix = torch.randint(x_all.shape[0], (m,), generator=g)
            iy = torch.randint(y_all.shape[0], (m,), generator=g)
        else:
            ix = torch.randperm(x_all.shape[0], generator=g)[:m]
            iy = torch.randperm(y_all.shape[0], generator=g)[:m]
        vals[i] = _mmd2_unbiased(x_all[ix], y_all[iy], degree, gamma, coef0)
    return float(vals.mean()), float(vals.std())


def diversity(
    feats: ArrayLike, pairs: int = 200, generator: torch.Generator | None = None
) -> float:
    """Mean L2 distance between ``pairs`` random pairs of rows, drawn with replacement.

    Args:
        feats: (N, D) features.
        pairs: number of pairs (InterHandGen: 200).
        generator: source of the pair draws.
    Returns:
        The mean distance (float).
    """
    x = _feats("feats", feats)
    g = _gen(generator)
    i = torch.randint(x.shape[0], (pairs,), generator=g)
    j = torch.randint(x.shape[0], (pairs,), generator=g)
    return float((x[i] - x[j]).norm(dim=1).mean())


def _knn_radii(x: Tensor, k: int, chunk: int) -> Tensor:
    """Distance of each row to its k-th nearest other row; x (N, D) -> (N,)."""
    out = []
    for s in range(0, x.shape[0], chunk):
        d = torch.cdist(x[s : s + chunk], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # the 1st smallest is the row itself
    return torch.cat(out)


def _coverage(ref: Tensor, radii: Tensor, query: Tensor, chunk: int) -> float:
    """Fraction of ``query`` rows inside the union of balls (ref_i, radii_i)."""
    hits = []
    for s in range(0, query.shape[0], chunk):
        d = torch.cdist(query[s : s + chunk], ref)
        hits.append((d <= radii[None, :]).any(dim=1))
    return float(torch.cat(hits).double().mean())


def precision_recall(
    real: ArrayLike,
    fake: ArrayLike,
    k: int = 5,
    max_samples: int = 1000,
    generator: torch.Generator | None = None,
    chunk: int = 1024,
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN ball manifolds.

    Both sets are randomly subsampled to ``max_samples`` rows (as InterHandGen's
    ``randperm(n)[:1000]``). Precision is the fraction of fake rows inside some real k-NN ball;
    recall the fraction of real rows inside some fake k-NN ball.

    Args:
        real: (N, D) features. fake: (M, D) features.
        k: neighbour rank defining each ball radius (InterHandGen: 5).
        max_samples: rows kept per set. generator: subsampling source. chunk: cdist row block.
    Returns:
        ``(precision, recall)`` in [0, 1].
    """
    x, y = _feats("real", real, k + 1), _feats("fake", fake, k + 1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: real {x.shape[1]}, fake {y.shape[1]}")
    g = _gen(generator)
    x = x[torch.randperm(x.shape[0], generator=g)[:max_samples]]
    y = y[torch.randperm(y.shape[0], generator=g)[:max_samples]]
    precision = _coverage(x, _knn_radii(x, k, chunk), y, chunk)
    recall = _coverage(y, _knn_radii(y, k, chunk), x, chunk)
    return precision, recall


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of a Student-t confidence interval over repeated runs.

    Args:
        values: one metric value per run.
        level: confidence level.
    Returns:
        ``(mean, half_width)``; the half-width is NaN for a single run (no spread estimate).
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_ci needs at least one value")
    if v.size == 1:
        return float(v[0]), math.nan
    sem = v.std(ddof=1) / math.sqrt(v.size)
    return float(v.mean()), float(scipy.stats.t.ppf(0.5 + level / 2.0, v.size - 1) * sem)


def evaluate_generation(
    fake_feats: ArrayLike,
    real_feats: ArrayLike,
    generator: torch.Generator | None = None,
    *,
    n_samples: int | None = None,
    kid_degree: int = 1,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    kid_replace: bool = False,
    diversity_pairs: int = 200,
    pr_k: int = 5,
    pr_max_samples: int = 1000,
) -> dict[str, float]:
    """All distribution metrics of one run, InterHandGen protocol.

    Each set is randomly permuted and truncated to ``n_samples`` rows first (all rows if None),
    then FID, KID (mean, std), diversity of both sets and precision/recall are computed.

    Args:
        fake_feats: (M, D) generated features. real_feats: (N, D) reference features.
        generator: the only source of randomness.
        n_samples, kid_*, diversity_pairs, pr_*: the knobs of the individual metrics.
    Returns:
        ``{"fid", "kid_mean", "kid_std", "diversity_fake", "diversity_real", "precision",
        "recall"}`` as floats.
    """
    g = _gen(generator)
    fake, real = _feats("fake_feats", fake_feats), _feats("real_feats", real_feats)
    if n_samples is not None:
        fake = fake[torch.randperm(fake.shape[0], generator=g)[:n_samples]]
        real = real[torch.randperm(real.shape[0], generator=g)[:n_samples]]
    kid_mean, kid_std = kernel_distance(
        real,
        fake,
        degree=kid_degree,
        subsets=kid_subsets,
        subset_size=kid_subset_size,
        generator=g,
        replace=kid_replace,
    )
    precision, recall = precision_recall(
        real, fake, k=pr_k, max_samples=pr_max_samples, generator=g
    )
    return {
        "fid": fid(real, fake),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "diversity_fake": diversity(fake, diversity_pairs, g),
        "diversity_real": diversity(real, diversity_pairs, g),
        "precision": precision,
        "recall": recall,
    }
