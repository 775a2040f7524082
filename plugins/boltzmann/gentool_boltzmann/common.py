"""Machinery the Boltzmann models share: sampling, data preparation, optimisers, pictures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import torch
from torch.nn import functional as F

from gentool import ImageDataset, Task


def bernoulli(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary samples with probabilities ``p``; a (CPU) ``generator`` makes them reproducible."""
    if generator is None:  # rand < p: three times faster than torch.bernoulli on the CPU
        return (torch.rand_like(p) < p).to(p.dtype)
    u = torch.rand(p.shape, generator=generator, dtype=p.dtype, device=generator.device)
    return (u.to(p.device) < p).to(p.dtype)


def normal_like(mean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``mean`` plus unit Gaussian noise."""
    if generator is None:
        return mean + torch.randn_like(mean)
    return mean + torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=generator.device).to(mean.device)


#: Added to the seed of the ``sample`` binarisation of each split, so that the test digits get a
#: draw independent of the training digits' (the same seed would give test digit i the uniform
#: noise of training digit i).
SPLIT_STREAMS = {"train": 0, "test": 1_000_003}


def binarized(data: ImageDataset, mode: str, seed: int, split: str = "train") -> ImageDataset:
    """The data with pixels made binary once (0 or 255), as the models see it.

    ``threshold``: > 0.5; ``sample``: one fixed Bernoulli draw per pixel (seeded, as in
    Salakhutdinov & Murray 2008; each ``split`` draws from its own stream); ``none``: grey
    levels kept (used as probabilities).
    """
    if mode == "none":
        return data
    x = data.images
    if mode == "threshold":
        out = (x > 127).to(torch.uint8) * 255
    else:
        if split not in SPLIT_STREAMS:
            raise ValueError(f"split must be one of {sorted(SPLIT_STREAMS)}, got {split!r}")
        g = torch.Generator().manual_seed(seed + SPLIT_STREAMS[split])
        out = (torch.rand(x.shape, generator=g) * 255 < x.float()).to(torch.uint8) * 255
    return ImageDataset(out, data.labels, data.class_names, data.name)


def flat(x: torch.Tensor) -> torch.Tensor:
    """Images ``[B, C, H, W]`` -> visible vectors ``[B, C*H*W]``."""
    return x.reshape(x.shape[0], -1)


def split_validation(data: ImageDataset, seed: int, share: float = 0.1, cap: int = 2000) -> tuple[ImageDataset, ImageDataset]:
    """Hold out a fixed random part of the training data for per-epoch validation."""
    n_val = min(cap, max(1, int(len(data) * share)))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + 99991))
    return data.subset(order[n_val:]), data.subset(order[:n_val])


def sgd(weights: Iterable[torch.nn.Parameter], biases: Iterable[torch.nn.Parameter], lr: float,
        momentum: float, weight_decay: float) -> torch.optim.SGD:
    """SGD with momentum; weight decay on the weights only."""
    return torch.optim.SGD([{"params": list(weights), "weight_decay": weight_decay},
                            {"params": list(biases), "weight_decay": 0.0}], lr=lr, momentum=momentum)


def lr_schedule(optimizer: torch.optim.Optimizer, kind: str, total_steps: int) -> dict[str, Any]:
    """A per-step LambdaLR for ``constant``, ``linear`` (to 0) or ``cosine`` decay over
    ``total_steps`` (a task's :attr:`gentool.Task.total_steps`: the optimizer steps this process
    takes, which the harness sets for the run's world size)."""
    total = max(1, total_steps)
    if kind == "constant":
        return {}
    if kind == "linear":
        fn = lambda s: max(0.0, 1.0 - s / total)  # noqa: E731
    else:
        fn = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))  # noqa: E731
    return {"lr": torch.optim.lr_scheduler.LambdaLR(optimizer, fn)}


def pseudo_log_likelihood(free_energy, v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pseudo-log-likelihood per example: sum_i log p(v_i | v_-i).

    Exact (every bit flipped in turn) for up to 256 visible units; above that the stochastic
    estimate that flips one random bit per example and scales by the dimension (as scikit-learn
    does), which is unbiased but noisy.
    """
    if v.shape[1] <= 256:
        f = free_energy(v)
        total = torch.zeros_like(f)
        for i in range(v.shape[1]):
            flipped = v.clone()
            flipped[:, i] = 1 - flipped[:, i]
            total += F.logsigmoid(free_energy(flipped) - f)
        return total
    idx = torch.randint(0, v.shape[1], (v.shape[0],), generator=generator).to(v.device)
    flipped = v.clone()
    rows = torch.arange(v.shape[0], device=v.device)
    flipped[rows, idx] = 1 - flipped[rows, idx]
    return v.shape[1] * F.logsigmoid(free_energy(flipped) - free_energy(v))


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor) -> float:
    """Accuracy of a logistic regression on (hidden) features: how useful the features are.

    Features are standardised on the training set first: the upper layers of a small model vary
    little, and an unscaled regression (L2 penalty) then predicts one class whatever they carry.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(train_x.cpu().double().numpy(), train_y.cpu().numpy())
    return float(clf.score(test_x.cpu().double().numpy(), test_y.cpu().numpy()))


def filters_image(W: torch.Tensor, shape: tuple[int, int, int], count: int = 100) -> torch.Tensor:
    """The first ``count`` columns of a visible-to-hidden weight matrix as images in [0, 1]."""
    w = W[:, :count].T.reshape(-1, *shape).float()
    lo = w.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = w.flatten(1).max(1).values.view(-1, 1, 1, 1)
    return (w - lo) / (hi - lo).clamp_min(1e-8)


def save_chain_pictures(frames: list[torch.Tensor], folder: Path, name: str = "gibbs_chain") -> None:
    """A Gibbs chain: ``frames`` (each ``[n, C, H, W]`` in [0, 1]) as one PNG (a row per step) and a GIF."""
    import io

    from PIL import Image

    from gentool import make_grid, save_grid, write_atomic

    n = frames[0].shape[0]
    save_grid(torch.cat(frames), folder / f"{name}.png", nrow=n)
    pictures = []
    for f in frames:
        arr = make_grid(f, nrow=n)
        pictures.append(Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr))
    buf = io.BytesIO()
    pictures[0].save(buf, format="GIF", save_all=True, append_images=pictures[1:], duration=120, loop=0)
    write_atomic(folder / f"{name}.gif", buf.getvalue())


class BoltzmannTask(Task):
    """What every Boltzmann model's task has in common: float32 steps, binarised data,
    a held-out validation part, and pictures of filters and chains."""

    autocast = False  # Gibbs sampling and hand-made updates stay in float32

    @classmethod
    def from_job(cls, job: Any) -> "BoltzmannTask":
        """The task for a ``gentool_train`` job (its config, data, learning rate and seed).

        Step totals are no constructor argument: the harness sets :attr:`total_steps` (at the
        run's world size) before :meth:`configure_optimizers`, where schedules are made."""
        return cls(job.config, job.data, job.options.lr, job.options.seed)

    def prepare(self, data: ImageDataset, binarize: str, seed: int) -> None:
        data = binarized(data, binarize, seed)
        self.data, self.val = split_validation(data, seed)
        self.shape = tuple(data.shape)
        self.n_visible = math.prod(self.shape)
