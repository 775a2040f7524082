"""Entry point of the GPT plugin: registers ``gpt``, its embedded corpus and the ``chat`` verb.

No torch here (``gentool list`` imports this module): the model code is imported inside the hooks.
The core routes ``gentool_train``, ``gentool_sample`` and ``gentool_evaluate`` to this plugin only
for ``gpt``, so the hooks take the job alone.
"""

from __future__ import annotations

from gentool import DatasetSpec, ModelSpec, hookimpl

from gentool_gpt.configs import GPTEvaluateOptions, GPTSampleOptions, GPTTrainConfig

NAME = "gpt"
DEFAULT_DATA = "tales"

SPEC = ModelSpec(
    name=NAME, family="transformer", modality="text", default_data=DEFAULT_DATA,
    summary="Small GPT (Llama-style decoder): pretrain on text, fine-tune to chat (--sft), gentool chat",
    config=GPTTrainConfig, epochs=4, batch_size=12, lr=3e-3,
    sample_options=GPTSampleOptions, evaluate_options=GPTEvaluateOptions,
    finetune_options={
        "sft": "chat fine-tuning on a JSON file of conversations (ShareGPT or OpenAI messages), or builtin",
        "sft_block_size": "context length of the chat fine-tuning in tokens (default 256; 0: the base run's)",
    },
)


@hookimpl
def gentool_register_models(register):
    register(SPEC)


@hookimpl
def gentool_register_datasets(register):
    from gentool_gpt.data import load_tales

    register(DatasetSpec(name=DEFAULT_DATA, kind="text", loader=load_tales,
                         summary="Short fables generated from templates, ~300 KB of English (embedded, no download)"))


@hookimpl
def gentool_register_commands(app):
    from gentool_gpt import chat

    chat.register(app)


@hookimpl
def gentool_open_chat(ref, device, options):
    """``gentool.open_chat``: our checkpoints and runs, pretrained Llama-family models (Hugging Face
    folders, hub ids, GGUF files) through our decoder, or any other transformers causal LM."""
    from gentool_gpt.backends import open_backend

    return open_backend(ref, device, quantize=options.get("quantize") or "auto", context=options.get("context"))


@hookimpl
def gentool_open_checkpoint(path):
    """``-c FILE.gguf`` or ``-c FOLDER`` (Hugging Face) for sample and evaluate: a ``gpt`` checkpoint
    (the core refuses it, naming gpt, where the user asked for another model)."""
    from gentool_gpt.pretrained import as_checkpoint

    return as_checkpoint(path)


@hookimpl
def gentool_describe_file(path):
    """``gentool info``: a ``.gguf`` file (its metadata) or a Hugging Face folder (its config)."""
    from gentool_gpt.pretrained import describe_file

    return describe_file(path)


@hookimpl
def gentool_train(job):
    from gentool_gpt.task import train

    return train(job)


@hookimpl
def gentool_sample(job):
    from gentool_gpt.task import sample

    return sample(job)


@hookimpl
def gentool_evaluate(job):
    from gentool_gpt.evaluate import evaluate

    return evaluate(job)
