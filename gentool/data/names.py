"""The names of the data sets built into gentool: one list, torch-free.

The plugin registry reads it at start-up (a plugin may not take these names), and
:mod:`gentool.data.registry` builds its loaders for exactly these names.
"""

from __future__ import annotations

#: What ``--data NAME`` finds without any plugin.
BUILTIN_DATASET_NAMES: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10")
