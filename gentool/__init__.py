"""gentool: one toolkit for deep generative models, extended by plugins.

Two audiences, one namespace:

- **Users** train, load, sample and evaluate from Python with the same verbs as the CLI::

      import gentool
      run = gentool.train("cgan", epochs=20, data="digits", latent_dim=8)
      m = run.load()                  # or gentool.load("runs/cgan/run1"), "cgan/run1", "hf://owner/name"
      images = m.sample(16, seed=0, label=3).images    # [16, C, H, W] in [0, 1]
      print(m.evaluate().metrics["fd"])

- **Plugin authors** import everything a plugin may use from here (``gentool.hookimpl``,
  ``gentool.ModelSpec``, ``gentool.Task``, ``gentool.fit``, ``gentool.SampleResult``, ...): the
  names below are the supported contract; the submodules they come from may move.

The module stays light: names are imported on first use (``import gentool`` loads no torch), so
``gentool --help`` and a plugin's entry-point module stay instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pluggy

from gentool import registry_access as _registry_access
from gentool.version import __version__

#: Marker for hook implementations in plugins: ``@gentool.hookimpl``.
hookimpl = pluggy.HookimplMarker("gentool")

#: name -> module that defines it; resolved on first access (PEP 562).
_EXPORTS: dict[str, str] = {
    # the Python API (the CLI's verbs)
    "train": "gentool.engine", "load": "gentool.engine", "Model": "gentool.engine",
    "TrainedRun": "gentool.engine", "Samples": "gentool.engine", "Evaluation": "gentool.engine",
    "SavedSamples": "gentool.sampling",
    # records hooks receive and return
    "ModelSpec": "gentool.api", "DatasetSpec": "gentool.data.spec", "TrainOptions": "gentool.api",
    "TrainJob": "gentool.api", "SampleJob": "gentool.api", "SampleResult": "gentool.api",
    "EvaluateJob": "gentool.api", "EvaluateResult": "gentool.api", "NoOptions": "gentool.api",
    "DiscriminateJob": "gentool.api",
    # chat models and tools from plugins
    "open_chat": "gentool.chat", "ChatSettings": "gentool.chat", "ChatBackend": "gentool.chat",
    "QUANTIZE": "gentool.chat",
    "Tool": "gentool.tools", "ToolAnswer": "gentool.tools", "list_tools": "gentool.tools",
    "keep_loaded": "gentool.tools", "find_files": "gentool.tools",
    # the training harness
    "Task": "gentool.training", "StepContext": "gentool.training", "TrainResult": "gentool.training",
    "fit": "gentool.training", "seed_everything": "gentool.training",
    # checkpoints and files
    "Checkpoint": "gentool.checkpoint", "load_checkpoint": "gentool.checkpoint",
    "read_header": "gentool.checkpoint", "write_atomic": "gentool.io",
    "resolve_checkpoint": "gentool.engine",
    # data
    "ImageDataset": "gentool.data.datasets", "TextDataset": "gentool.data.datasets",
    "load_dataset": "gentool.data.registry", "load_text": "gentool.data.text",
    "BUILTIN_DATASET_NAMES": "gentool.data.names",
    # typed options
    "config_from_dict": "gentool.config", "config_to_dict": "gentool.config", "build_config": "gentool.config",
    "flag_value": "gentool.config",
    # devices, processes, places
    "pick_device": "gentool.devices", "autocast": "gentool.devices", "cpu_bf16_support": "gentool.devices",
    "launched_world": "gentool.distributed",
    "cache_dir": "gentool.paths", "runs_dir": "gentool.paths", "extractors_dir": "gentool.paths",
    # pictures
    "make_grid": "gentool.images", "save_grid": "gentool.images", "save_images": "gentool.images",
    # metrics (the whole package is gentool.metrics)
    "compute_image_metrics": "gentool.metrics", "get_extractor": "gentool.metrics",
    "train_feature_classifier": "gentool.metrics", "prepare_images": "gentool.metrics",
    "feature_stats": "gentool.metrics", "frechet_distance": "gentool.metrics",
    "frechet_distance_from_stats": "gentool.metrics", "dataset_fingerprint": "gentool.metrics",
    # errors and reporting
    "GentoolError": "gentool.errors", "DataError": "gentool.errors", "CheckpointError": "gentool.errors",
    "ConfigError": "gentool.errors", "PluginError": "gentool.errors", "MissingSplitError": "gentool.errors",
    "say": "gentool.report", "warn": "gentool.report", "GentoolWarning": "gentool.report",
}
_SUBMODULES = {"metrics", "data", "testing", "hookspecs", "api", "errors", "report", "engine", "sampling", "chat"}

#: Modules whose names ``from gentool import *`` takes: the torch-free ones (a star import stays light).
_LIGHT = {"gentool.api", "gentool.engine", "gentool.errors", "gentool.report", "gentool.config", "gentool.io",
          "gentool.paths", "gentool.data.names", "gentool.sampling", "gentool.chat", "gentool.tools"}
__all__ = ["__version__", "hookimpl", *sorted(n for n, m in _EXPORTS.items() if m in _LIGHT)]


def _process_registry() -> Any:
    from gentool.plugins import get_registry

    return get_registry()


#: The modules below gentool.plugins (data, chat, tools) reach the registry through this.
_registry_access.provide(_process_registry)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"gentool.{name}")
    raise AttributeError(f"module 'gentool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from gentool.api import (DatasetSpec, EvaluateJob, EvaluateResult, ModelSpec, NoOptions, SampleJob,
                             SampleResult, TrainJob, TrainOptions)
    from gentool.chat import ChatBackend, ChatSettings, open_chat
    from gentool.checkpoint import Checkpoint, load_checkpoint, read_header
    from gentool.config import build_config, config_from_dict, config_to_dict, flag_value
    from gentool.data.datasets import ImageDataset, TextDataset
    from gentool.data.names import BUILTIN_DATASET_NAMES
    from gentool.data.registry import load_dataset
    from gentool.data.text import load_text
    from gentool.devices import autocast, pick_device
    from gentool.distributed import launched_world
    from gentool.engine import Evaluation, Model, Samples, TrainedRun, load, resolve_checkpoint, train
    from gentool.errors import CheckpointError, ConfigError, DataError, GentoolError, MissingSplitError, PluginError
    from gentool.images import make_grid, save_grid, save_images
    from gentool.io import write_atomic
    from gentool.metrics import (compute_image_metrics, dataset_fingerprint, feature_stats, frechet_distance,
                                 frechet_distance_from_stats, get_extractor, prepare_images,
                                 train_feature_classifier)
    from gentool.paths import cache_dir, runs_dir
    from gentool.report import GentoolWarning, say, warn
    from gentool.tools import Tool, ToolAnswer, find_files, keep_loaded, list_tools
    from gentool.training import StepContext, Task, TrainResult, fit, seed_everything
