"""A plugin written against gentool 0.1's contract, kept unchanged to prove it still works.

This is the example VAE plugin as it stood before the facade, typed verb options and
EvaluateResult: it imports ``gentool.api``, ``gentool.training`` and ``gentool.config``, guards
every hook with the model name, declares its verb flags as dicts, trains with ``job.fit(task)``
and returns a plain dict from evaluate (with a ``"warning"`` entry). Only the model name
(``legacy-vae``) and the package name differ from the original. ``tests/test_legacy_plugin.py``
trains, samples and evaluates it: it must keep working, warning only where it uses a deprecated
name. Do not modernise this file.

The plugin module named by the entry point: registration and hooks only, no torch import.

gentool imports this module for ``gentool list``; the model code (and torch) is imported inside
the hooks, when a user trains, samples or evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gentool
from gentool.api import ModelSpec

MODEL = "legacy-vae"


@dataclass
class VAEConfig:
    """Options of the ``vae`` model (``gentool train vae --set latent_dim=8``)."""

    latent_dim: int = field(default=16, metadata={"help": "Size of the latent code z."})
    hidden: tuple[int, ...] = field(default=(256, 128), metadata={"help": "Widths of the encoder's hidden layers (the decoder mirrors them)."})
    beta: float = field(default=1.0, metadata={"help": "Weight of the KL term (beta-VAE; 1 is the plain ELBO)."})

    def __post_init__(self) -> None:
        if self.latent_dim < 1:
            raise ValueError("latent_dim must be at least 1")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError("hidden needs at least one positive width")
        if self.beta < 0:
            raise ValueError("beta must be non-negative")


@gentool.hookimpl
def gentool_register_models(register):
    register(ModelSpec(
        name=MODEL,
        family="autoencoder",
        summary="Variational autoencoder (MLP encoder/decoder, Bernoulli likelihood)",
        config=VAEConfig,
        default_data="digits",
        epochs=30,
        batch_size=64,
        lr=2e-3,
        sample_options={},  # no flags of its own: the core refuses typos such as --labl
        evaluate_options={},
    ))


@gentool.hookimpl
def gentool_train(model, job):
    if model != MODEL:
        return None
    from gentool_legacy_vae.model import VAETask

    return job.fit(VAETask(job.config, job.data, lr=job.options.lr))


@gentool.hookimpl
def gentool_sample(model, job):
    if model != MODEL:
        return None
    from gentool.api import SampleResult

    from gentool_legacy_vae.model import load_vae

    vae = load_vae(job.checkpoint, job.device)
    return SampleResult(images=vae.sample(job.n, job.generator).cpu())


@gentool.hookimpl
def gentool_evaluate(model, job):
    if model != MODEL:
        return None
    from gentool_legacy_vae.model import evaluate

    metrics = evaluate(job)
    metrics["warning"] = "a 0.1-style warning, passed in the metrics dict"
    return metrics
