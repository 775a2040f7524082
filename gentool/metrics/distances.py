"""Distances between two sets of feature vectors (numpy, float64).

These are the numbers behind ``gentool evaluate``: the Fréchet distance (FID when the features
come from Inception-v3), the kernel inception distance (KID) and the precision / recall /
density / coverage quartet. They only see features, so they work for any extractor; the
extractor's name is what tells a reader which "FID" a figure is.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from gentool.errors import GentoolError

# Elements per distance block in the chunked k-NN code: 2**23 float64 = 64 MiB per block.
_BLOCK_ELEMENTS = 1 << 23


def _as_features(x: object, what: str) -> np.ndarray:
    """A 2-D float64 array ``[N, D]`` (a 1-D input is one feature per sample)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{what}: expected features of shape [N, D], got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GentoolError(f"{what}: features contain NaN or infinity")
    return a


def _check_pair(a: np.ndarray, b: np.ndarray, minimum: int, metric: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{metric}: feature dimensions differ ({a.shape[1]} vs {b.shape[1]})")
    if len(a) < minimum or len(b) < minimum:
        raise GentoolError(
            f"{metric} needs at least {minimum} samples in each set (got {len(a)} and {len(b)})"
        )


def _sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a (numerically) positive semi-definite matrix via eigh."""
    sym = (sigma + sigma.T) / 2.0
    w, v = np.linalg.eigh(sym)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_stats(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 tr((s1 s2)^(1/2))``. The trace of the matrix square root
    is computed as the sum of square roots of the eigenvalues of the symmetric matrix
    ``s1^(1/2) s2 s1^(1/2)`` (same spectrum as ``s1 s2``), which avoids ``scipy.linalg.sqrtm``
    and its spurious complex parts on singular covariances. Tiny negative round-off is clipped to 0.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"frechet distance: shapes do not match: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
            f"mu2 {mu2.shape}, sigma2 {sigma2.shape}"
        )
    s1h = _sqrt_psd(sigma1)
    m = s1h @ sigma2 @ s1h
    eig = np.linalg.eigvalsh((m + m.T) / 2.0)
    tr_covmean = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(fd, 0.0)


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, ``np.cov``) covariance of features ``[N, D]``."""
    f = _as_features(feats, "feature_stats")
    if len(f) < 2:
        raise GentoolError(f"need at least 2 samples for a covariance (got {len(f)})")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N, D]`` and ``[M, D]``."""
    a = _as_features(feats_a, "frechet_distance")
    b = _as_features(feats_b, "frechet_distance")
    _check_pair(a, b, 2, "Fréchet distance")
    mu1, s1 = feature_stats(a)
    mu2, s2 = feature_stats(b)
    return frechet_distance_from_stats(mu1, s1, mu2, s2)


def _mmd2_unbiased_poly(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 estimate with k(u, v) = (u.v / d + 1)^3 for two equal-size samples."""
    m, d = x.shape
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    sum_xx = kxx.sum() - np.trace(kxx)
    sum_yy = kyy.sum() - np.trace(kyy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m))


def kernel_inception_distance(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel.

    Averaged over ``subsets`` random subsets of ``min(subset_size, len(a), len(b))`` samples drawn
    without replacement from each set (seeded, so repeatable). Returns ``(mean, std)`` over
    subsets. Unlike FD it is unbiased, so it can be slightly negative when the sets match.
    """
    a = _as_features(feats_a, "kernel_inception_distance")
    b = _as_features(feats_b, "kernel_inception_distance")
    _check_pair(a, b, 2, "KID")
    if subsets < 1:
        raise ValueError(f"KID: subsets must be >= 1, got {subsets}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID: subset_size must be >= 2, got {subset_size}")
    rng = np.random.default_rng(seed)
    values = np.empty(subsets, dtype=np.float64)
    for i in range(subsets):
        xa = a[rng.choice(len(a), m, replace=False)]
        xb = b[rng.choice(len(b), m, replace=False)]
        values[i] = _mmd2_unbiased_poly(xa, xb)
    return float(values.mean()), float(values.std())


def _distance_blocks(x: np.ndarray, y: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Euclidean distances from row-blocks of ``x`` to all of ``y``: ``(rows, [rows, len(y)])``.

    Blocks hold at most ~2**23 elements, so 10k x 10k never materialises at once.
    """
    y_sq = np.einsum("ij,ij->i", y, y)
    step = max(1, _BLOCK_ELEMENTS // max(1, len(y)))
    for start in range(0, len(x), step):
        rows = slice(start, min(start + step, len(x)))
        xb = x[rows]
        d2 = np.einsum("ij,ij->i", xb, xb)[:, None] + y_sq[None, :] - 2.0 * (xb @ y.T)
        np.clip(d2, 0.0, None, out=d2)
        yield rows, np.sqrt(d2, out=d2)


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of ``x`` to its k-th nearest neighbour in ``x`` (itself excluded)."""
    x = _as_features(x, "knn_radii")
    if not 1 <= k < len(x):
        raise GentoolError(f"k-NN radius needs k in [1, {len(x) - 1}] for {len(x)} samples, got k={k}")
    radii = np.empty(len(x), dtype=np.float64)
    for rows, d in _distance_blocks(x, x):
        # Index 0 of the sorted row is the point itself (distance 0), so index k is the k-th neighbour.
        radii[rows] = np.partition(d, k, axis=1)[:, k]
    return radii


def precision_recall_density_coverage(
    real: np.ndarray, fake: np.ndarray, *, k: int = 5
) -> dict[str, float]:
    """Manifold-based fidelity/diversity scores of ``fake`` against ``real`` features.

    - precision: share of fake samples inside some real sample's k-NN ball (fidelity);
    - recall: share of real samples inside some fake sample's k-NN ball (diversity)
      (Kynkäänniemi et al. 2019);
    - density: mean number of real balls holding a fake sample, divided by k (can exceed 1);
    - coverage: share of real samples whose own k-NN ball holds at least one fake sample
      (Naeem et al. 2020).

    Distances are computed in blocks, so 10k x 10k samples take a few hundred MB at most.
    """
    r = _as_features(real, "precision_recall_density_coverage")
    f = _as_features(fake, "precision_recall_density_coverage")
    _check_pair(r, f, k + 1, f"Precision/recall with k={k}")
    real_radii = knn_radii(r, k)
    fake_radii = knn_radii(f, k)

    fake_in_real = np.zeros(len(f), dtype=bool)  # precision
    balls_per_fake = np.zeros(len(f), dtype=np.int64)  # density
    real_in_fake = np.zeros(len(r), dtype=bool)  # recall
    nearest_fake = np.full(len(r), np.inf)  # coverage
    for rows, d in _distance_blocks(f, r):  # d: [fake block, n_real]
        inside_real = d <= real_radii[None, :]
        fake_in_real[rows] = inside_real.any(axis=1)
        balls_per_fake[rows] = inside_real.sum(axis=1)
        real_in_fake |= (d <= fake_radii[rows, None]).any(axis=0)
        np.minimum(nearest_fake, d.min(axis=0), out=nearest_fake)

    return {
        "precision": float(fake_in_real.mean()),
        "recall": float(real_in_fake.mean()),
        "density": float(balls_per_fake.sum() / (k * len(f))),
        "coverage": float((nearest_fake <= real_radii).mean()),
    }
