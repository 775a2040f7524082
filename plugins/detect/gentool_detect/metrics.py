"""Detection metrics on numpy arrays: accuracy, ROC AUC, average precision, equal error rate,
expected calibration error and the reliability table. Label 1 means generated."""

from __future__ import annotations

import numpy as np


def _check(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(y, dtype=np.int64).ravel(), np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError("labels and scores differ in length")
    return y, s


def auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """ROC AUC (Mann-Whitney, ties counted half); None when one class is missing."""
    y, s = _check(y, s)
    pos, neg = int(y.sum()), int((1 - y).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i: j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def average_precision(y: np.ndarray, s: np.ndarray) -> float | None:
    """Average precision (area under the precision-recall steps, as scikit-learn defines it)."""
    y, s = _check(y, s)
    if y.sum() == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    last = np.r_[np.nonzero(np.diff(ss))[0], len(ss) - 1]  # last index of each distinct score
    tp = np.cumsum(ys)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def eer(y: np.ndarray, s: np.ndarray) -> float | None:
    """Equal error rate: where the false positive rate meets the false negative rate."""
    y, s = _check(y, s)
    pos, neg = int(y.sum()), int((1 - y).sum())
    if pos == 0 or neg == 0:
        return None
    best = 1.0
    for t in np.unique(np.r_[s, np.inf]):
        fpr = float(((s >= t) & (y == 0)).sum()) / neg
        fnr = float(((s < t) & (y == 1)).sum()) / pos
        best = min(best, max(fpr, fnr))
    return best


def accuracy(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> float:
    """Share of images whose verdict (probability >= threshold) is right."""
    y, p = _check(y, p)
    return float(((p >= threshold).astype(np.int64) == y).mean())


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per equal-width probability bin: count, mean predicted probability, observed fake rate."""
    y, p = _check(y, p)
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    rows = []
    for b in range(bins):
        m = idx == b
        rows.append({"lo": b / bins, "hi": (b + 1) / bins, "count": int(m.sum()),
                     "confidence": float(p[m].mean()) if m.any() else float("nan"),
                     "observed": float(y[m].mean()) if m.any() else float("nan")})
    return rows


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the probability of "generated" (equal-width bins, weighted
    by count): the mean gap between what the detector says and how often it is so."""
    y, p = _check(y, p)
    total = len(y)
    return float(sum(r["count"] / total * abs(r["confidence"] - r["observed"])
                     for r in reliability(y, p, bins) if r["count"]))

