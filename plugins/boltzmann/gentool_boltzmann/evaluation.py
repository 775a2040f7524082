"""Evaluation helpers shared by the Boltzmann models: options, test data, the linear probe."""

from __future__ import annotations

from typing import Any, Callable

import torch

from gentool.data import ImageDataset
from gentool.config import flag_value

from gentool_boltzmann.common import binarized, linear_probe


def settings(job: Any) -> dict[str, Any]:
    """The ``gentool evaluate`` flags of the Boltzmann models, parsed and checked."""
    o = job.options
    out = {
        "ais_runs": flag_value(o, "ais_runs", int, 100, minimum=2),
        "ais_steps": flag_value(o, "ais_steps", int, 14500, minimum=10),
        "probe": flag_value(o, "probe", bool, True),
        "max_test": flag_value(o, "max_test", int, None, minimum=1),
    }
    return out


def prepared(data: ImageDataset, cfg: dict, seed: int, limit: int | None) -> ImageDataset:
    """Data as the model was trained on it (same binarisation), at most ``limit`` examples."""
    if limit is not None and len(data) > limit:
        data = data.subset(slice(0, limit))
    mode = "none" if cfg.get("visible") == "gaussian" else cfg.get("binarize", "threshold")
    return binarized(data, mode, seed)


def probe_accuracy(job: Any, opts: dict, train: ImageDataset, test: ImageDataset,
                   features: Callable[[torch.Tensor], torch.Tensor]) -> float | None:
    """Logistic-regression accuracy on the top hidden features, where the data has labels."""
    if not opts["probe"] or train.labels is None or test.labels is None:
        return None
    with torch.no_grad():
        f_train = features(train.as_float())
        f_test = features(test.as_float())
    return linear_probe(f_train, train.labels, f_test, test.labels)
