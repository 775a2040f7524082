"""Entry point of the GAN plugin: registers gan, cgan, dcgan, stylegan, srgan and cyclegan, their
hooks, the `upscale` and `translate` verbs and the data set `mnist-m-pair` (cyclegan's digit pair;
the core routes each call to this plugin only for its own models).

No torch here: :mod:`gentool_gan.task`, :mod:`gentool_gan.sampling` and
:mod:`gentool_gan.evaluate` are imported only when a model trains, samples or evaluates.
"""

from __future__ import annotations

from gentool import DatasetSpec, ModelSpec, hookimpl

from gentool_gan.configs import (CGANConfig, DCGANConfig, GANEvaluateOptions, GANSampleOptions, MLPGANConfig,
                                 StyleGANConfig, StyleGANEvaluateOptions, StyleGANSampleOptions)
from gentool_gan.cyclegan_config import CycleGANConfig, CycleGANSampleOptions
from gentool_gan.srgan_config import SRGANConfig, SRGANEvaluateOptions, SRGANSampleOptions

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
    ModelSpec("stylegan", FAMILY, "StyleGAN2 with adaptive augmentation for small data, conditional on labels (Karras 2020)",
              StyleGANConfig, epochs=20, batch_size=32, lr=5e-3,
              sample_options=StyleGANSampleOptions, evaluate_options=StyleGANEvaluateOptions),
    ModelSpec("srgan", FAMILY, "SRGAN super-resolution: SRResNet then adversarial stage; `gentool upscale` (Ledig 2017)",
              SRGANConfig, epochs=10, batch_size=32, lr=1e-3,
              sample_options=SRGANSampleOptions, evaluate_options=SRGANEvaluateOptions,
              next_steps="gentool upscale IMAGE...   |   gentool evaluate srgan"),
    ModelSpec("cyclegan", FAMILY, "CycleGAN: unpaired translation between two domains; `gentool translate` (Zhu 2017)",
              CycleGANConfig, epochs=20, batch_size=16, lr=2e-4, sample_options=CycleGANSampleOptions,
              next_steps="gentool translate IMAGE... [--direction b2a]   |   gentool evaluate cyclegan"),
]
#: Models with their own modules for every hook (the others share task.py, sampling.py, evaluate.py).
OWN = {"stylegan": ("stylegan_train", "stylegan_sample", "stylegan_sample"),
       "srgan": ("srgan_task", "srgan_sample", "srgan_sample"),
       "cyclegan": ("cyclegan_task", "cyclegan_sample", "cyclegan_sample")}


def _own(model: str, hook: int) -> object | None:
    """The function of ``model``'s own module for hook 0 (train), 1 (sample) or 2 (evaluate)."""
    if model not in OWN:
        return None
    import importlib

    module = importlib.import_module(f"gentool_gan.{OWN[model][hook]}")
    return getattr(module, ("train", "sample", "evaluate")[hook])


@hookimpl
def gentool_register_models(register):
    for spec in SPECS:
        register(spec)


def _load_mnist_m_pair(**kwargs):
    from gentool_gan.digit_pair import load_mnist_m_pair

    return load_mnist_m_pair(**kwargs)


@hookimpl
def gentool_register_datasets(register):
    register(DatasetSpec("mnist-m-pair", "MNIST (A) and MNIST-M-style digits on CIFAR patches (B), 32x32 colour, "
                         "labels kept, for cyclegan; built locally from MNIST and CIFAR files", _load_mnist_m_pair))


@hookimpl
def gentool_register_commands(app):
    from gentool_gan.verbs import register

    register(app)


@hookimpl
def gentool_train(model, job):
    own = _own(model, 0)
    if own is not None:
        return own(job)
    from gentool_gan.task import train

    return train(model, job)


@hookimpl
def gentool_sample(model, job):
    own = _own(model, 1)
    if own is not None:
        return own(job)
    from gentool_gan.sampling import sample

    return sample(model, job)


@hookimpl
def gentool_evaluate(model, job):
    own = _own(model, 2)
    if own is not None:
        return own(job)
    from gentool_gan.evaluate import evaluate

    return evaluate(model, job)


@hookimpl
def gentool_discriminate(model, job):
    from gentool_gan.discriminate import discriminate

    return discriminate(model, job)


@hookimpl
def gentool_register_tools(register):
    from gentool_gan.tools import TOOLS

    for tool in TOOLS:
        register(tool)
