"""Entry point of the Boltzmann plugin: registers bm, rbm, dbn and dbm and their hooks (the core
routes each call to this plugin only for its own models).

No torch here: each model's module (``gentool_boltzmann.<model>``) is imported only when that
model trains, samples or evaluates. Each module exposes ``train(job)``, ``sample(job)`` and
``evaluate(job)``.
"""

from __future__ import annotations

import importlib

from gentool import ModelSpec, hookimpl

from gentool_boltzmann.configs import BMConfig, DBMConfig, DBNConfig, EvaluateOptions, RBMConfig, SampleOptions

FAMILY = "boltzmann"

_VERBS = {"sample_options": SampleOptions, "evaluate_options": EvaluateOptions}

SPECS = [
    ModelSpec("bm", FAMILY, "General Boltzmann machine (visible-visible and hidden-hidden links) for small inputs",
              BMConfig, epochs=30, batch_size=20, lr=0.05, **_VERBS),
    ModelSpec("rbm", FAMILY, "Restricted Boltzmann machine: Bernoulli or Gaussian visible, CD-k/PCD-k, AIS likelihood",
              RBMConfig, epochs=20, batch_size=200, lr=0.05, **_VERBS),
    ModelSpec("dbn", FAMILY, "Deep belief network: RBMs stacked and trained greedily, sampled top-down",
              DBNConfig, epochs=20, batch_size=20, lr=0.1, **_VERBS),
    ModelSpec("dbm", FAMILY, "Deep Boltzmann machine: greedy pretraining, then mean-field and persistent chains",
              DBMConfig, epochs=30, batch_size=20, lr=0.05, **_VERBS),
]


def _module(model: str):
    return importlib.import_module(f"gentool_boltzmann.{model}")


@hookimpl
def gentool_register_models(register):
    for spec in SPECS:
        register(spec)


@hookimpl
def gentool_train(model, job):
    return _module(model).train(job)


@hookimpl
def gentool_sample(model, job):
    return _module(model).sample(job)


@hookimpl
def gentool_evaluate(model, job):
    return _module(model).evaluate(job)
