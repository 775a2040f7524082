"""Calibration of the detector's logit z: P(generated) = sigmoid(z / T + b).

Temperature scaling (Guo et al. 2017) fits T alone; the detector here also fits a bias b (Platt
scaling of the logit), because its decision boundary need not sit at z = 0: it is trained on
blurred and re-compressed copies and then scored on clean images, which shifts the logits of
both classes, and a temperature can scale but not shift them. Both are fitted by minimising the
negative log-likelihood on the held-out calib part (Newton steps with a line search and a weak
ridge, so perfectly separated data gives a large but finite 1/T). 1/T > 0 keeps the ranking, so
AUC, AP and EER are unchanged; only what 0.9 means changes.
"""

from __future__ import annotations

import numpy as np

MIN_T, MAX_T = 0.01, 100.0
RIDGE = 1e-4


def fit_temperature(logits: np.ndarray, y: np.ndarray, bias: bool = True) -> tuple[float, float]:
    """``(T, b)`` minimising the NLL of sigmoid(logits / T + b); ``bias=False`` fits T alone (b = 0)."""
    z, yy = np.asarray(logits, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(z) == 0 or yy.min() == yy.max():
        return 1.0, 0.0
    scale = max(float(np.std(z)), 1e-6)
    x = z / scale  # work on standardised logits: a = scale / T

    def loss(p: np.ndarray) -> float:
        u = p[0] * x + p[1]
        return float(np.mean(np.logaddexp(0.0, u) - yy * u) + RIDGE * (p[0] ** 2 + p[1] ** 2) / 2)

    p = np.array([1.0, 0.0])
    for _ in range(100):
        u = p[0] * x + p[1]
        s = 1 / (1 + np.exp(-u))
        r = s - yy
        grad = np.array([np.mean(r * x), np.mean(r)]) + RIDGE * p
        w = s * (1 - s)
        hess = np.array([[np.mean(w * x * x), np.mean(w * x)], [np.mean(w * x), np.mean(w)]]) + RIDGE * np.eye(2)
        if not bias:
            grad[1], hess[0, 1], hess[1, 0], hess[1, 1] = 0.0, 0.0, 0.0, 1.0
        step = np.linalg.solve(hess, grad)
        t, before = 1.0, loss(p)
        while t > 1e-6 and loss(p - t * step) > before:
            t /= 2
        p = p - t * step
        if np.abs(t * step).max() < 1e-9:
            break
    a = min(max(p[0], scale / MAX_T), scale / MIN_T)
    return float(scale / a), float(p[1])
