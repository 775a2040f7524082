"""The plugin contract: every hook a gentool plugin may implement.

This module is the one contract between the core and its plugins. A plugin is a module (or
object) with functions decorated by ``@gentool.hookimpl`` whose names and arguments match the
specifications below; pluggy lets an implementation accept a *subset* of the arguments, so new
arguments can be added here without breaking old plugins.

Plugins are found through the entry-point group ``gentool``::

    [project.entry-points.gentool]
    vae = "gentool_vae.plugin"

Rules every plugin keeps:

* The module named by the entry point must import quickly and must not import torch at module
  level: ``gentool list`` and ``gentool --help`` import every plugin and must stay instant.
  Import heavy libraries inside the hook bodies.
* :func:`gentool_train`, :func:`gentool_sample` and :func:`gentool_evaluate` are called only on the
  plugin that registered the model (the core routes each call to its owner): an implementation
  needs no check of the model name (one written for gentool 0.1 that has it keeps working).
* Import what a plugin uses from the facade, ``gentool`` (``gentool.Task``, ``gentool.fit``,
  ``gentool.SampleResult``, ...), never from other plugins.
* Errors a user can cause are raised as :class:`gentool.errors.GentoolError` (one clear line);
  progress and warnings go through :func:`gentool.say` and :func:`gentool.warn`, not ``print``.
* A function named ``gentool_*`` that is no hook below (a misspelling such as ``gentool_sampel``)
  makes the plugin fail to load, with the name it resembles: it would never be called.

Hooks marked *firstresult* stop at the first non-``None`` answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import pluggy

if TYPE_CHECKING:  # only for type checkers: keeps this module free of heavy imports
    from pathlib import Path

    import typer

    import torch

    from gentool.api import (DatasetSpec, DiscriminateJob, EvaluateJob, EvaluateResult, ModelSpec, SampleJob,
                             SampleResult, TrainJob)
    from gentool.chat import ChatBackend
    from gentool.checkpoint import Checkpoint
    from gentool.tools import Tool

hookspec = pluggy.HookspecMarker("gentool")


@hookspec
def gentool_register_models(register: Callable[["ModelSpec"], None]) -> None:
    """Register the models this plugin provides.

    Call ``register(ModelSpec(...))`` once per model. The spec carries the model's name (what users
    type: ``gentool train NAME``), family, one-line summary, its typed config class (a dataclass
    whose fields, defaults and ``metadata={"help": ...}`` become the model's options), its modality
    (``"image"`` or ``"text"``), the data set used when ``--data`` is not given, and training
    defaults (epochs, batch size, learning rate).

    Called once per process for every plugin, including by ``gentool list``: keep it cheap and free
    of torch imports. A name already taken by another plugin is refused and reported by
    ``gentool plugins``.
    """


@hookspec
def gentool_register_datasets(register: Callable[["DatasetSpec"], None]) -> None:
    """Register named data sets that ``--data NAME`` can load.

    Call ``register(DatasetSpec(name=..., summary=..., loader=..., kind="image"|"text"))``. The
    loader is called as ``loader(split=..., image_size=..., channels=...)`` and returns a
    :class:`gentool.data.ImageDataset` or :class:`gentool.data.TextDataset`. Loaders must work
    offline from local files and raise :class:`gentool.errors.DataError` with a clear message when
    the data is not there. Built-in names (``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``)
    cannot be replaced.
    """


@hookspec
def gentool_register_commands(app: "typer.Typer") -> None:
    """Add command-line verbs of this plugin to the ``gentool`` app.

    Use ``@app.command("detect")`` and the like. Called on every CLI start, so the command
    functions must import their heavy dependencies inside their bodies. A verb name that the core
    or another plugin already uses is refused and reported by ``gentool plugins``.
    """


@hookspec(firstresult=True)
def gentool_train(model: str, job: "TrainJob") -> Any:
    """Train ``model`` as described by ``job`` and return the harness result (firstresult).

    ``job`` (:class:`gentool.TrainJob`) carries the model's validated config (``job.config``), the
    training options (``job.options``: epochs, batch_size, lr, seed, ...), the loaded data set
    (``job.data``) and the run folder (``job.run``). Build the networks, wrap them in a
    :class:`gentool.Task` and ``return gentool.fit(task, job)`` (or return the task itself: the core
    then calls ``gentool.fit(task, job)``): the shared harness then does the
    device placement, precision, seeding, progress bar, checkpoints (``last`` each epoch, ``best``),
    resume, Ctrl-C, the NaN guard and data-parallel training, and tells the task the total number of
    optimizer steps (``task.total_steps``) before its optimizers and schedulers are made.
    """


@hookspec(firstresult=True)
def gentool_sample(model: str, job: "SampleJob") -> "SampleResult | None":
    """Draw ``job.n`` samples from the checkpoint ``job.checkpoint`` (firstresult).

    Rebuild the networks from ``job.checkpoint.config`` and ``job.checkpoint.data``, load the
    weights with ``job.checkpoint.load_into(...)``, sample on ``job.device`` with ``job.generator``
    (a CPU generator seeded by the core: the same seed gives the same samples), and return a
    :class:`gentool.SampleResult` holding ``images`` (float tensor ``[N, C, H, W]`` in ``[0, 1]``,
    optionally ``labels``) or ``texts``. The core writes the single files and the grid; anything
    else is refused with an error naming this plugin. ``job.options`` holds the model's own
    sampling options: an instance of the dataclass declared as ``ModelSpec.sample_options``.
    """


@hookspec(firstresult=True)
def gentool_evaluate(model: str, job: "EvaluateJob") -> "EvaluateResult | None":
    """Evaluate the checkpoint ``job.checkpoint`` on ``job.data`` and return metrics (firstresult).

    Return a :class:`gentool.EvaluateResult`: ``metrics`` (name to number, or ``None`` for a
    figure your own checks withdrew), ``settings`` (name to string: the feature extractor, the
    sampler) and ``warnings`` (sentences the user must see). A flat dict (the gentool 0.1 form) is
    still accepted. Use :mod:`gentool.metrics` for Fréchet distance, KID, precision/recall and
    density/coverage so every plugin reports them alike.
    """


@hookspec(firstresult=True)
def gentool_discriminate(model: str, job: "DiscriminateJob") -> "torch.Tensor | None":
    """Score ``job.images`` with the discriminator stored in ``job.checkpoint`` (firstresult; optional).

    For GANs whose checkpoints keep their discriminator: return a float tensor ``[N]`` of logits,
    higher meaning "real". ``job.images`` is a float tensor ``[N, C, H, W]`` in ``[0, 1]`` of the
    checkpoint's image shape (the core checks it), ``job.labels`` the classes for a conditional
    discriminator (or ``None``), ``job.device`` where to run. This is what lets another plugin
    (the fake-image detector) use a GAN's discriminator as a baseline without importing the GAN's
    plugin: ``gentool.load(checkpoint).discriminate(images)``. A model without a usable
    discriminator raises :class:`gentool.errors.ConfigError` saying so.
    """


@hookspec(firstresult=True)
def gentool_open_chat(ref: "str | None", device: "torch.device", options: "Mapping[str, Any]") -> "ChatBackend | None":
    """Open the chat model ``ref`` on ``device`` and return a backend (firstresult; optional).

    ``ref`` is what the user named (a checkpoint, a run, a model folder, a hub id, a ``.gguf``
    file) or None for the plugin's default. ``options`` holds how to load it, as the user gave it
    (``quantize``: ``auto|none|bf16|int8|int4``; ``context``: the most positions to keep, an int):
    a plugin ignores the keys it does not know, and may leave ``options`` out of its signature
    (added in gentool 0.2; older plugins keep working). Return None for a ``ref`` this plugin does not serve; raise
    :class:`gentool.errors.GentoolError` (one line) for one it serves but cannot open. The backend
    keeps :class:`gentool.chat.ChatBackend`:

    * ``chat_stream(messages, settings) -> Iterator[str]``: the answer to OpenAI-form messages
      (``[{"role", "content"}]``) in pieces as tokens are decoded, with a
      :class:`gentool.ChatSettings` (temperature, top_k, top_p, max_tokens, seed); closing the
      iterator stops generating;
    * ``count_tokens(messages) -> int``: the rendered conversation's tokens (usage counts);
    * ``describe() -> dict[str, str]``: what is loaded;
    * ``reseed(seed)``: restart the sampling stream (same seed, same answer);
    * attributes ``context_length``, and after each answer ``stop_reason`` (``"end of turn"``,
      ``"max tokens"``, ``"context full"``), ``last_tokens`` (the answer's tokens) and
      ``cut_tokens`` (the oldest tokens of a too-long conversation left out).

    ``gentool.open_chat(ref)`` calls this hook; ``gentool chat`` and ``gentool serve`` use it.
    """


@hookspec(firstresult=True)
def gentool_open_checkpoint(path: "Path", model: "str | None") -> "Checkpoint | None":
    """Open a model file of another format as a checkpoint of one of your models (firstresult; optional).

    ``gentool sample/evaluate MODEL -c PATH`` and ``gentool.load(PATH)`` ask the plugins first when
    ``PATH`` is not a gentool checkpoint (a file not ending in ``.safetensors``, or a folder without
    one): read it and return ``gentool.Checkpoint.in_memory(path, meta, tensors)`` with the meta and
    the tensors your ``gentool_sample``/``gentool_evaluate`` expect of your own checkpoints (the gpt
    plugin: a ``.gguf`` file or a Hugging Face Llama-family folder as a ``gpt`` model), else None.
    ``model`` is the model the user named (None: any); return None for another one. Raise
    :class:`gentool.errors.CheckpointError` (one line) for a damaged file of your format.
    """


@hookspec(firstresult=True)
def gentool_describe_file(path: "Path") -> "dict[str, Any] | None":
    """Describe a model file that is not a gentool checkpoint (firstresult; optional).

    ``gentool info PATH`` asks the plugins first: return a flat dict of what the file holds (plain
    JSON values: strings, numbers, booleans, lists, small dicts), led by ``"format"``, for a file
    this plugin opens (the gpt plugin: a ``.gguf`` file or a Hugging Face model folder), else None.
    Read only the file's header: this runs for every ``gentool info``. Raise
    :class:`gentool.errors.CheckpointError` (one line) for a file of your format that is damaged.
    """


@hookspec
def gentool_register_tools(register: Callable[["Tool"], None]) -> None:
    """Register tools that work on files a user gives: ``register(gentool.Tool(...))`` (optional).

    A :class:`gentool.Tool` has a ``name`` (``detect``, ``upscale``), a one-line ``summary``, an
    ``options`` dataclass (or None) and ``run(files, options) -> list[gentool.ToolAnswer]``:
    ``files`` is ``[(filename, bytes), ...]``, ``options`` an instance of the dataclass, and the
    answers come one per file, in order, each with JSON-able ``fields``, an optional ``png`` and a
    one-line ``error`` for a file that could not be handled (the others are still answered). No web
    framework in plugins: ``gentool serve`` turns each tool into ``POST /v1/tools/NAME`` and a panel
    of its page. Keep registration cheap (no torch): import heavy code inside ``run``.
    """
