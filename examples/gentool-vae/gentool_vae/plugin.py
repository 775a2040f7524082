"""The plugin module named by the entry point: registration and hooks only, no torch import.

gentool imports this module for ``gentool list``; the model code (and torch) is imported inside
the hooks, when a user trains, samples or evaluates. Everything comes from the facade, ``gentool``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gentool import ModelSpec, NoOptions, hookimpl


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


@dataclass
class VAESampleOptions:
    """``gentool sample vae`` flags (``m.sample(16, temperature=0.7)`` in Python)."""

    temperature: float = field(default=1.0, metadata={
        "help": "Scale of the latent noise: below 1 gives cleaner, less varied digits; 0 the decoded mean code."})

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("--temperature must be >= 0")


@hookimpl
def gentool_register_models(register):
    register(ModelSpec(
        name="vae",
        family="autoencoder",
        summary="Variational autoencoder (MLP encoder/decoder, Bernoulli likelihood)",
        config=VAEConfig,
        default_data="digits",
        epochs=30,
        batch_size=64,
        lr=2e-3,
        sample_options=VAESampleOptions,
        evaluate_options=NoOptions,  # no flags of its own: the core refuses typos such as --labl
    ))


@hookimpl
def gentool_train(model, job):  # the core calls this only for "vae": no name check needed
    import gentool
    from gentool_vae.model import VAETask

    return gentool.fit(VAETask(job.config, job.data, lr=job.options.lr), job)


@hookimpl
def gentool_sample(model, job):
    from gentool import SampleResult
    from gentool_vae.model import load_vae

    vae = load_vae(job.checkpoint, job.device)
    return SampleResult(images=vae.sample(job.n, job.generator, job.options.temperature).cpu())


@hookimpl
def gentool_evaluate(model, job):
    from gentool_vae.model import evaluate

    return evaluate(job)
