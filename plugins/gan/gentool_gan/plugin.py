"""Entry point of the GAN plugin: registers gan, cgan and dcgan and their hooks (the core routes
each call to this plugin only for its own models).

No torch here: :mod:`gentool_gan.task`, :mod:`gentool_gan.sampling` and
:mod:`gentool_gan.evaluate` are imported only when a model trains, samples or evaluates.
"""

from __future__ import annotations

from gentool import ModelSpec, hookimpl

from gentool_gan.configs import CGANConfig, DCGANConfig, GANEvaluateOptions, GANSampleOptions, MLPGANConfig

FAMILY = "gan"

SPECS = [
    ModelSpec("gan", FAMILY, "Vanilla GAN: fully connected generator and discriminator (Goodfellow 2014)",
              MLPGANConfig, epochs=30, batch_size=32, lr=2e-4,
              sample_options=GANSampleOptions, evaluate_options=GANEvaluateOptions),
    ModelSpec("cgan", FAMILY, "Conditional GAN: samples of the class you ask for (Mirza & Osindero 2014)",
              CGANConfig, epochs=20, batch_size=32, lr=2e-4,
              sample_options=GANSampleOptions, evaluate_options=GANEvaluateOptions),
    ModelSpec("dcgan", FAMILY, "DCGAN: convolutional generator and discriminator with batch norm (Radford 2015)",
              DCGANConfig, epochs=25, batch_size=32, lr=2e-4,
              sample_options=GANSampleOptions, evaluate_options=GANEvaluateOptions),
]


@hookimpl
def gentool_register_models(register):
    for spec in SPECS:
        register(spec)


@hookimpl
def gentool_train(model, job):
    from gentool_gan.task import train

    return train(model, job)


@hookimpl
def gentool_sample(model, job):
    from gentool_gan.sampling import sample

    return sample(model, job)


@hookimpl
def gentool_evaluate(model, job):
    from gentool_gan.evaluate import evaluate

    return evaluate(model, job)
