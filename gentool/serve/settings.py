"""The server's settings and limits (no web framework here: the CLI builds one before importing it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ServeConfig:
    """What ``gentool serve`` serves and how much it takes at once."""

    #: The runs folder (``--runs``; default ``$GENTOOL_RUNS`` or ``./runs``).
    runs: Path = field(default_factory=lambda: Path(os.environ.get("GENTOOL_RUNS", "runs")))
    #: When set, every API request needs ``Authorization: Bearer KEY`` (the page's files do not).
    api_key: str | None = None
    #: A chat model outside the runs folder (``--chat-model``: a checkpoint, a transformers folder,
    #: a hub id); listed by ``/v1/models`` under this name.
    chat_model: str | None = None
    #: Where models run: auto|cpu|cuda|mps.
    device: str = "auto"
    #: Weights of pretrained chat models (GGUF, Hugging Face): auto|none|bf16|int8|int4 (``--quantize``).
    quantize: str = "auto"
    #: Requests that may wait for a busy model (beyond the one it runs); one more gets a 503.
    queue_size: int = 8
    #: Loaded models kept (least recently used dropped first).
    max_models: int = 3
    #: Threads that run generations (each loaded model uses one at a time).
    workers: int = 4
    #: Largest JSON request body, in bytes.
    max_body: int = 1 << 20
    #: Largest upload to a tool (all files together), in bytes.
    max_upload: int = 32 << 20
    #: Largest ``max_tokens`` of a chat completion.
    max_tokens: int = 4096
    #: Largest ``n`` of an image generation.
    max_images: int = 64
    #: Most files in one tool request.
    max_files: int = 32
    #: Most image pixels in one tool request, all files together (a tool's time and memory grow with
    #: them, and requests for the same tool wait behind it): 1,048,576 is one 1024 x 1024 image,
    #: about 20 s of a default x2 srgan on one CPU thread (``benchmarks/tool_cost.py``).
    max_pixels: int = 1 << 20

    #: Set by :func:`gentool.serve.prepare`: the ``chat_model`` opened at start (kept for the first request).
    chat_backend: Any = field(default=None, repr=False, compare=False)
    #: Set by :func:`gentool.serve.prepare` once the settings were checked.
    prepared: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.runs = Path(self.runs)
