"""Image-quality metrics: Fréchet distance, KID, precision/recall/density/coverage.

The distances live in :mod:`~gentool.metrics.distances` (numpy only), the networks that make
the features in :mod:`~gentool.metrics.features`. Every result names its feature extractor:
a Fréchet distance is only "FID" when the features are Inception-v3's.
"""

from __future__ import annotations

import numpy as np
import torch

from gentool.metrics.distances import (
    feature_stats,
    frechet_distance,
    frechet_distance_from_stats,
    kernel_inception_distance,
    knn_radii,
    precision_recall_density_coverage,
)
from gentool.metrics.features import (
    MAX_CNN_SIDE,
    FeatureExtractor,
    GentoolCNNExtractor,
    InceptionExtractor,
    dataset_fingerprint,
    get_extractor,
    prepare_images,
)
from gentool.metrics.features import train_cnn as train_feature_classifier

__all__ = [
    "MAX_CNN_SIDE",
    "FeatureExtractor",
    "GentoolCNNExtractor",
    "InceptionExtractor",
    "compute_image_metrics",
    "dataset_fingerprint",
    "feature_stats",
    "frechet_distance",
    "frechet_distance_from_stats",
    "get_extractor",
    "hit_share",
    "kernel_inception_distance",
    "knn_radii",
    "precision_recall_density_coverage",
    "prepare_images",
    "train_feature_classifier",
]


def hit_share(pred: object, truth: object) -> float:
    """The share of ``pred`` equal to ``truth`` (tensors or arrays of labels), as a count over a
    count: 1,800 hits of 2,000 is exactly 0.9, where a float32 mean gives 0.89999998 and fails a
    ``>= 0.9`` target it meets. NaN for no predictions."""
    p = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    t = truth.detach().cpu().numpy() if isinstance(truth, torch.Tensor) else np.asarray(truth)
    if p.shape != t.shape:
        raise ValueError(f"hit_share: predictions of shape {p.shape} against labels of shape {t.shape}")
    return int((p.astype(np.int64) == t.astype(np.int64)).sum()) / p.size if p.size else float("nan")


def compute_image_metrics(
    real: torch.Tensor,
    fake: torch.Tensor,
    extractor: FeatureExtractor,
    *,
    k: int = 5,
    kid_subsets: int = 100,
) -> dict:
    """All image metrics of ``fake`` against ``real`` images under one extractor, JSON-ready.

    Keys: ``features`` (the extractor's name), ``n_real``, ``n_fake``, ``fd`` (Fréchet distance
    in that feature space; FID for Inception), ``kid_mean``, ``kid_std``, ``precision``,
    ``recall``, ``density``, ``coverage`` (with ``k`` nearest neighbours).
    """
    fr = extractor.features(real)
    ff = extractor.features(fake)
    kid_mean, kid_std = kernel_inception_distance(fr, ff, subsets=kid_subsets)
    prdc = precision_recall_density_coverage(fr, ff, k=k)
    return {
        "features": extractor.name,
        "n_real": int(len(fr)),
        "n_fake": int(len(ff)),
        "fd": frechet_distance(fr, ff),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        **prdc,
    }
