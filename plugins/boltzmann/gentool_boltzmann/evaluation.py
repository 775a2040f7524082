"""Evaluation helpers shared by the Boltzmann models: test data, the linear probe, the log Z check.

The models' ``gentool evaluate`` flags are :class:`gentool_boltzmann.configs.EvaluateOptions`;
the core parses and checks them and hands the instance over as ``job.options``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from gentool import EvaluateResult, ImageDataset

from gentool_boltzmann.common import binarized, linear_probe


def prepared(data: ImageDataset, cfg: dict, seed: int, limit: int | None, split: str = "test") -> ImageDataset:
    """Data binarised as the model was trained on it (same mode; for ``sample``, the ``split``'s
    own random draw), at most ``limit`` examples."""
    if limit is not None and len(data) > limit:
        data = data.subset(slice(0, limit))
    mode = "none" if cfg.get("visible") == "gaussian" else cfg.get("binarize", "threshold")
    return binarized(data, mode, seed, split)


def probe_accuracy(opts: Any, train: ImageDataset, test: ImageDataset,
                   features: Callable[[torch.Tensor], torch.Tensor] | tuple[torch.Tensor, torch.Tensor]) -> float | None:
    """Logistic-regression accuracy on the top hidden features, where the data has labels and
    ``opts.probe`` (the ``--probe`` flag) asks for it.

    ``features``: a function of the images, or the (train, test) features already computed.
    """
    if not opts.probe or train.labels is None or test.labels is None:
        return None
    if isinstance(features, tuple):
        f_train, f_test = features
    else:
        with torch.no_grad():
            f_train = features(train.as_float())
            f_test = features(test.as_float())
    return linear_probe(f_train, train.labels, f_test, test.labels)


def check_log_z(result: EvaluateResult, log_z: float, floor: float, headline: str, mean_log_p_low: float,
                error_keys: tuple[str, ...], states: str = "the data themselves") -> None:
    """Hold the AIS ``log_z`` against ``floor``, a certain lower bound on log Z from the data.

    ``result.metrics`` gains ``log_z_floor`` and ``ais_consistent``. Where AIS lies below the
    floor its log Z is wrong (too low: the chains missed modes), so every figure built on it is
    withdrawn: the ``headline`` metric and its ``error_keys`` become None,
    ``<headline>_at_most`` gives the most the figure could be (``mean_log_p_low - floor``), and a
    warning in ``result.warnings`` says what happened. ``states`` names the binary states the
    floor sums over, for the warning.
    """
    m = result.metrics
    m["log_z_floor"] = floor
    m["ais_consistent"] = bool(log_z >= floor)
    if log_z >= floor:
        return
    m[headline] = None
    for key in error_keys:
        m[key] = None
    m[f"{headline}_at_most"] = mean_log_p_low - floor
    result.warnings.append(
        f"AIS gave log Z = {log_z:.2f}, below {floor:.2f}, a certain lower bound on log Z from {states} "
        f"(log Z >= log of the sum of p* over distinct states). The AIS chains missed "
        f"modes of the model, so no log-likelihood is reported: it is at most {mean_log_p_low - floor:.2f}. "
        "More --ais-steps rarely cure this; a model whose Gibbs chains mix does (a lower learning rate, more "
        "persistent chains or Gibbs steps)."
    )
