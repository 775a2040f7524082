"""Entry point of the GAN plugin: registers gan, cgan and dcgan and routes the hooks.

No torch here: :mod:`gentool_gan.task`, :mod:`gentool_gan.sampling` and
:mod:`gentool_gan.evaluate` are imported only when a model trains, samples or evaluates.
"""

from __future__ import annotations

import gentool
from gentool.api import ModelSpec

from gentool_gan.configs import CGANConfig, DCGANConfig, MLPGANConfig

FAMILY = "gan"

SAMPLE_OPTIONS = {
    "label": "cgan: class to draw (id or class name), or 'all' for one row of -n samples per class",
    "interpolate": "write a latent walk: interpolation.gif and -n frames (true/false)",
    "keyframes": "with --interpolate: random latent points the walk passes through (default 4)",
}
EVALUATE_OPTIONS = {
    "cas": "cgan: also the Classification Accuracy Score (true/false; default true)",
    "cas_images": "cgan: generated (and real baseline) training images for CAS (default: the train split's size, at most 10000)",
    "cas_epochs": "cgan: epochs of the CAS classifiers (default: enough for 40,000 images seen)",
}

SPECS = [
    ModelSpec("gan", FAMILY, "Vanilla GAN: fully connected generator and discriminator (Goodfellow 2014)",
              MLPGANConfig, epochs=30, batch_size=32, lr=2e-4,
              sample_options=SAMPLE_OPTIONS, evaluate_options={}),
    ModelSpec("cgan", FAMILY, "Conditional GAN: samples of the class you ask for (Mirza & Osindero 2014)",
              CGANConfig, epochs=20, batch_size=32, lr=2e-4,
              sample_options=SAMPLE_OPTIONS, evaluate_options=EVALUATE_OPTIONS),
    ModelSpec("dcgan", FAMILY, "DCGAN: convolutional generator and discriminator with batch norm (Radford 2015)",
              DCGANConfig, epochs=25, batch_size=32, lr=2e-4,
              sample_options=SAMPLE_OPTIONS, evaluate_options={}),
]
NAMES = {s.name for s in SPECS}


@gentool.hookimpl
def gentool_register_models(register):
    for spec in SPECS:
        register(spec)


@gentool.hookimpl
def gentool_train(model, job):
    if model not in NAMES:
        return None
    from gentool_gan.task import train

    return train(model, job)


@gentool.hookimpl
def gentool_sample(model, job):
    if model not in NAMES:
        return None
    from gentool_gan.sampling import sample

    return sample(model, job)


@gentool.hookimpl
def gentool_evaluate(model, job):
    if model not in NAMES:
        return None
    from gentool_gan.evaluate import evaluate

    return evaluate(model, job)
