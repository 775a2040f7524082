"""The options of each model (typed dataclasses; no torch import, gentool list reads them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class SGDOptions:
    """Training options every Boltzmann model shares."""

    # "sample" is the binarisation of the published MNIST figures (Salakhutdinov & Murray 2008):
    # each grey level is the probability of a one, drawn once per pixel from the run's seed. On
    # data that is binary already it changes nothing. "threshold" was the default before.
    binarize: Literal["sample", "threshold", "none"] = _opt(
        "sample", "How grey pixels become binary units: one seeded Bernoulli draw per pixel (as the published "
        "MNIST figures), > 0.5, or kept as probabilities.")
    method: Literal["cd", "pcd"] = _opt("pcd", "Contrastive divergence (chains restart at the data) or persistent CD.")
    k: int = _opt(1, "Gibbs steps per update.")
    momentum: float = _opt(0.5, "SGD momentum.")
    weight_decay: float = _opt(1e-4, "L2 penalty on the weights (not the biases).")
    lr_schedule: Literal["constant", "linear", "cosine"] = _opt("linear", "Learning-rate decay over the run.")
    init_std: float = _opt(0.01, "Standard deviation of the initial weights.")
    sample_steps: int = _opt(1000, "Gibbs steps from noise when drawing samples.")

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k must be at least 1")
        if not 0 <= self.momentum < 1:
            raise ValueError("momentum must be in [0, 1)")
        if self.weight_decay < 0 or self.init_std <= 0:
            raise ValueError("weight_decay must be >= 0 and init_std > 0")
        if self.sample_steps < 1:
            raise ValueError("sample_steps must be at least 1")


@dataclass
class RBMConfig(SGDOptions):
    """Restricted Boltzmann machine."""

    hidden: int = _opt(500, "Number of hidden units (500: the published MNIST figures).")
    visible: Literal["bernoulli", "gaussian"] = _opt(
        "bernoulli", "Visible units: binary, or real-valued with unit variance (data standardised per pixel).")
    sparsity_target: float = _opt(0.0, "Target mean activation of the hidden units (0: no sparsity penalty).")
    sparsity_cost: float = _opt(0.1, "Weight of the sparsity penalty on the hidden biases.")
    # The recipe's schedules (Hinton 2010, "A practical guide to training RBMs", sections 9-10:
    # momentum 0.5 while the weights are small, then 0.9; Salakhutdinov & Murray 2008: CD with k
    # raised from 1 to 25 in the course of training). Both are read from the epoch, so --resume
    # continues them exactly.
    momentum_final: float | None = _opt(
        None, "Momentum from epoch momentum_epochs + 1 on (Hinton 2010: 0.5 at first, then 0.9); "
        "none: momentum throughout.")
    momentum_epochs: int = _opt(5, "Epochs trained with the initial momentum before momentum_final takes over.")
    # the default: PCD-1 for the first half of the run, PCD-3 for the second, when the model is
    # sharper and its chains need more steps (on MNIST, 100 epochs: -87.72 nats against -88.01
    # with PCD-1 throughout; docs/benchmarks.md)
    k_schedule: tuple[str, ...] = _opt(
        ("50%:3",), "CD-k schedule EPOCH:K,... : from that epoch (1-based, or a share of the run such as "
        "50%) on, K Gibbs steps per update, e.g. 21:3,61:5 or 50%:3 (Salakhutdinov & Murray 2008 raised k "
        "from 1 to 25 during training); empty (--set k_schedule=): k throughout.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden < 1:
            raise ValueError("hidden must be at least 1")
        if not 0 <= self.sparsity_target < 1:
            raise ValueError("sparsity_target must be in [0, 1)")
        if self.momentum_final is not None and not 0 <= self.momentum_final < 1:
            raise ValueError("momentum_final must be in [0, 1)")
        if self.momentum_epochs < 0:
            raise ValueError("momentum_epochs must be >= 0")
        self.k_steps()  # refuses a malformed schedule now, not epochs into the run

    def k_steps(self, epochs: int | None = None) -> list[tuple[int, int]]:
        """The k schedule as (first epoch, 1-based; k) pairs in epoch order, starting with (1, k).

        A share ``P%`` starts at epoch ``floor(P / 100 * epochs) + 1`` of a run of ``epochs``
        (50% of 100 epochs: epoch 51); it needs ``epochs`` (without, the schedule is only checked).
        When ``--resume`` grows ``--epochs``, shares move with the new end, as learning-rate
        schedules stretch.
        """
        steps = {1: self.k}
        for item in self.k_schedule:
            epoch, sep, k = str(item).partition(":")
            share = epoch.strip().endswith("%")
            try:
                value = float(epoch.strip()[:-1]) if share else int(epoch)
                k_i = int(k)
            except ValueError:
                raise ValueError(f"k_schedule items are EPOCH:K or P%:K (e.g. 21:3, 50%:3), got {item!r}") from None
            if not sep or k_i < 1 or (not share and value < 1) or (share and not 0 <= value <= 100):
                raise ValueError(
                    f"k_schedule items are EPOCH:K with EPOCH >= 1 (or 0% to 100%) and K >= 1, got {item!r}")
            if share:
                if epochs is None:
                    continue
                value = math.floor(value / 100 * epochs + 1e-9) + 1
            steps[int(value)] = k_i
        return sorted(steps.items())

    def k_at(self, epoch: int, epochs: int | None = None) -> int:
        """Gibbs steps per update in ``epoch`` (0-based, as the harness counts) of a run of ``epochs``."""
        if epochs is None and any(str(i).strip().partition(":")[0].endswith("%") for i in self.k_schedule):
            raise ValueError("a k_schedule with shares of the run (P%) needs the run's epochs")
        return [k for first, k in self.k_steps(epochs) if first <= epoch + 1][-1]

    def momentum_at(self, epoch: int) -> float:
        """Momentum in ``epoch`` (0-based)."""
        if self.momentum_final is None or epoch < self.momentum_epochs:
            return self.momentum
        return self.momentum_final


@dataclass
class DBNConfig(SGDOptions):
    """Deep belief network: RBMs trained greedily, bottom up."""

    layers: tuple[int, ...] = _opt((256, 256), "Hidden layer sizes, bottom up (e.g. 500,1000).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.layers or min(self.layers) < 1:
            raise ValueError("layers needs at least one positive size")


@dataclass
class DBMConfig(SGDOptions):
    """Deep Boltzmann machine."""

    layers: tuple[int, ...] = _opt((256, 256), "Hidden layer sizes, bottom up (at least two, e.g. 500,1000).")
    # 5, not 1: on MNIST one Gibbs step per update left the persistent chains behind the model
    # (samples from noise were blurred averages, AIS fell below the data's floor under log Z)
    k: int = _opt(5, "Gibbs steps per update (5: with 1 the persistent chains lag the model).")
    pretrain_fraction: float = _opt(0.3, "Share of the epochs spent on greedy layer-wise pretraining.")
    mean_field_iters: int = _opt(10, "Mean-field iterations for the data-dependent statistics.")
    chains: int = _opt(100, "Persistent chains for the model statistics.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.layers) < 2 or min(self.layers) < 1:
            raise ValueError("a DBM needs at least two positive hidden layer sizes")
        if not 0 <= self.pretrain_fraction < 1:
            raise ValueError("pretrain_fraction must be in [0, 1)")


@dataclass
class BMConfig(SGDOptions):
    """General Boltzmann machine with visible-visible and hidden-hidden connections."""

    # thresholded: the bm is for small inputs (tiny digits) and has no published figure to match
    binarize: Literal["sample", "threshold", "none"] = _opt(
        "threshold", "How grey pixels become binary units: one seeded Bernoulli draw per pixel, > 0.5, or kept "
        "as probabilities.")
    hidden: int = _opt(32, "Number of hidden units (keep it small: updates are unit by unit).")
    mean_field_iters: int = _opt(10, "Mean-field iterations for the hidden units with the data clamped.")
    chains: int = _opt(100, "Persistent chains for the model statistics.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden < 1:
            raise ValueError("hidden must be at least 1")


@dataclass
class EvaluateOptions:
    """``gentool evaluate bm|rbm|dbn|dbm`` flags (``m.evaluate(ais_runs=30)`` in Python).

    bm enumerates instead of running AIS: it takes the AIS flags but does not use them.
    """

    ais_runs: int = _opt(100, "AIS runs (importance samples) for log Z.")
    ais_steps: int = _opt(14500, "AIS intermediate distributions (14500 as in Salakhutdinov & Murray 2008).")
    probe: bool = _opt(True, "Train a logistic regression on the top hidden features (where the data has labels).")
    max_test: int | None = _opt(None, "Score at most this many test examples (default: all).")

    def __post_init__(self) -> None:
        if self.ais_runs < 2:
            raise ValueError("--ais-runs must be at least 2")
        if self.ais_steps < 10:
            raise ValueError("--ais-steps must be at least 10")
        if self.max_test is not None and self.max_test < 1:
            raise ValueError("--max-test must be at least 1")


@dataclass
class SampleOptions:
    """``gentool sample bm|rbm|dbn|dbm`` takes no flags of its own (the Gibbs steps are the
    model's ``sample_steps`` option): declared empty so that a mistyped flag is refused."""
