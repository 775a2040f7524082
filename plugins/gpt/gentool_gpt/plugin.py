"""Entry point of the GPT plugin: registers ``gpt``, its embedded corpus and the ``chat`` verb.

No torch here (``gentool list`` imports this module): the model code is imported inside the hooks.
"""

from __future__ import annotations

import importlib.util

import gentool
from gentool.api import ModelSpec

from gentool_gpt.configs import GPTTrainConfig

NAME = "gpt"
DEFAULT_DATA = "tales"

SAMPLE_OPTIONS = {
    "prompt": "text the samples continue (default: none, start of text)",
    "max_tokens": "tokens to generate per sample (default 500)",
    "temperature": "softmax temperature, 0 for greedy (default 0.8)",
    "top_k": "sample among the k likeliest tokens only (default off)",
    "top_p": "nucleus sampling: the smallest set of tokens with this much probability (default off)",
}
EVALUATE_OPTIONS = {
    "max_tokens": "for a chat model: longest answer generated per test conversation (default 200)",
    "temperature": "for a chat model: sampling temperature of the test answers (default 0, greedy)",
    "conversations": "for a chat model: held-out conversations to answer (default 50)",
}

SPEC = ModelSpec(
    name=NAME, family="transformer", modality="text", default_data=DEFAULT_DATA,
    summary="Small GPT (Llama-style decoder): pretrain on text, fine-tune to chat (--sft), gentool chat",
    config=GPTTrainConfig, epochs=4, batch_size=12, lr=3e-3,
    sample_options=SAMPLE_OPTIONS, evaluate_options=EVALUATE_OPTIONS,
    finetune_options={"sft": "chat fine-tuning on a JSON file of conversations (ShareGPT or OpenAI messages)"},
)


@gentool.hookimpl
def gentool_register_models(register):
    register(SPEC)


@gentool.hookimpl
def gentool_register_datasets(register):
    from gentool.data import DatasetSpec

    from gentool_gpt.data import load_tales

    register(DatasetSpec(name=DEFAULT_DATA, kind="text", loader=load_tales,
                         summary="Short fables generated from templates, ~300 KB of English (embedded, no download)"))


@gentool.hookimpl
def gentool_register_commands(app):
    if importlib.util.find_spec("gentool_gpt.chat") is not None:
        from gentool_gpt import chat

        chat.register(app)


@gentool.hookimpl
def gentool_train(model, job):
    if model != NAME:
        return None
    from gentool_gpt.task import train

    return train(job)


@gentool.hookimpl
def gentool_sample(model, job):
    if model != NAME:
        return None
    from gentool_gpt.task import sample

    return sample(job)


@gentool.hookimpl
def gentool_evaluate(model, job):
    if model != NAME:
        return None
    from gentool_gpt.evaluate import evaluate

    return evaluate(job)
