"""Entry point of the Boltzmann plugin: registers bm, rbm, dbn and dbm and routes the hooks.

No torch here: each model's module (``gentool_boltzmann.<model>``) is imported only when that
model trains, samples or evaluates. Each module exposes ``train(job)``, ``sample(job)`` and
``evaluate(job)``.
"""

from __future__ import annotations

import importlib

import gentool
from gentool.api import ModelSpec

from gentool_boltzmann.configs import BMConfig, DBMConfig, DBNConfig, RBMConfig

FAMILY = "boltzmann"

EVALUATE_OPTIONS = {
    "ais_runs": "AIS runs (importance samples) for log Z; default 100",
    "ais_steps": "AIS intermediate distributions; default 14500 (Salakhutdinov & Murray)",
    "probe": "train a logistic regression on the top hidden features (true/false; default true when labelled)",
    "max_test": "score at most this many test examples (default all)",
}

SPECS = [
    ModelSpec("bm", FAMILY, "General Boltzmann machine (visible-visible and hidden-hidden links) for small inputs",
              BMConfig, epochs=30, batch_size=20, lr=0.05, sample_options={}, evaluate_options=EVALUATE_OPTIONS),
    ModelSpec("rbm", FAMILY, "Restricted Boltzmann machine: Bernoulli or Gaussian visible, CD-k/PCD-k, AIS likelihood",
              RBMConfig, epochs=20, batch_size=20, lr=0.1, sample_options={}, evaluate_options=EVALUATE_OPTIONS),
    ModelSpec("dbn", FAMILY, "Deep belief network: RBMs stacked and trained greedily, sampled top-down",
              DBNConfig, epochs=20, batch_size=20, lr=0.1, sample_options={}, evaluate_options=EVALUATE_OPTIONS),
    ModelSpec("dbm", FAMILY, "Deep Boltzmann machine: greedy pretraining, then mean-field and persistent chains",
              DBMConfig, epochs=30, batch_size=20, lr=0.05, sample_options={}, evaluate_options=EVALUATE_OPTIONS),
]
NAMES = {s.name for s in SPECS}


def _module(model: str):
    return importlib.import_module(f"gentool_boltzmann.{model}")


@gentool.hookimpl
def gentool_register_models(register):
    for spec in SPECS:
        register(spec)


@gentool.hookimpl
def gentool_train(model, job):
    return _module(model).train(job) if model in NAMES else None


@gentool.hookimpl
def gentool_sample(model, job):
    return _module(model).sample(job) if model in NAMES else None


@gentool.hookimpl
def gentool_evaluate(model, job):
    return _module(model).evaluate(job) if model in NAMES else None
