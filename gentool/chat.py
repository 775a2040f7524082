"""Chat models through the core: :func:`open_chat`, the decoding settings and the backend protocol.

A plugin that serves chat models (the ``gpt`` plugin: its own checkpoints and transformers causal
LMs) implements the ``gentool_open_chat`` hook and returns an object that keeps
:class:`ChatBackend`. ``gentool chat``, ``gentool serve`` and any script then talk to it alike::

    import gentool
    bot = gentool.open_chat("runs/gpt/run2")            # None: the newest gpt run
    for piece in bot.chat_stream([{"role": "user", "content": "hi"}], gentool.ChatSettings(seed=0)):
        print(piece, end="")

No torch at import time: this module is part of the light facade.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Protocol, Sequence, runtime_checkable

from gentool.errors import GentoolError

if TYPE_CHECKING:
    import torch

#: One message in OpenAI form: ``{"role": "system"|"user"|"assistant", "content": "..."}``.
Message = Mapping[str, str]
#: Largest seed a torch generator takes (``manual_seed`` wants a 64-bit integer).
MAX_SEED = 2**63 - 1
#: Weight formats a chat model may be loaded in (``auto``: the fastest this machine has, measured).
QUANTIZE = ("auto", "none", "bf16", "int8", "int4")
NO_CHAT_PLUGIN = ("no plugin opens chat models: install one that does (the gpt plugin: "
                  "pip install -e plugins/gpt)")


@dataclass
class ChatSettings:
    """Decoding settings of one answer (``gentool chat``'s flags and ``/set``, the API's fields)."""

    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    max_tokens: int = 256
    seed: int | None = None

    def check(self, *, flags: bool = False) -> "ChatSettings":
        """Raise :class:`GentoolError` (one line) for values that make no sense; return self.

        Numbers must be finite and in range, whole numbers whole, the seed in ``0..2**63-1``.
        ``flags`` names the values as the command line's flags (``--top-p``), else as ``/set``'s.
        """
        def name(key: str) -> str:
            return "--" + key.replace("_", "-") if flags else key

        def number(key: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise GentoolError(f"{name(key)} must be a finite number, not {value!r}")
            return float(value)

        def whole(key: str, value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise GentoolError(f"{name(key)} must be a whole number, not {value!r}")
            return value

        if number("temperature", self.temperature) < 0:
            raise GentoolError(f"{name('temperature')} must be >= 0 (0 is greedy), not {self.temperature!r}")
        if self.top_k is not None and whole("top_k", self.top_k) < 1:
            raise GentoolError(f"{name('top_k')} must be at least 1 (or none), not {self.top_k!r}")
        if self.top_p is not None and not 0 < number("top_p", self.top_p) <= 1:
            raise GentoolError(f"{name('top_p')} must be in (0, 1] (or none), not {self.top_p!r}")
        if whole("max_tokens", self.max_tokens) < 1:
            raise GentoolError(f"{name('max_tokens')} must be at least 1, not {self.max_tokens!r}")
        if self.seed is not None and not 0 <= whole("seed", self.seed) <= MAX_SEED:
            raise GentoolError(f"{name('seed')} must be in 0..{MAX_SEED} (2**63-1) (or none), not {self.seed!r}")
        return self


@runtime_checkable
class ChatBackend(Protocol):
    """What ``gentool_open_chat`` returns: a loaded chat model. Not thread-safe: callers run one
    answer at a time per backend (``gentool serve`` queues requests per loaded model).

    After each :meth:`chat_stream` the attributes describe the answer just given.
    """

    #: Longest context the model takes, in tokens.
    context_length: int
    #: Why the last answer ended: ``"end of turn"``, ``"max tokens"`` or ``"context full"``.
    stop_reason: str
    #: Tokens the last answer produced (the usage count of a completion).
    last_tokens: int
    #: Tokens of the last conversation left out (its oldest) because it was longer than the context.
    cut_tokens: int

    def chat_stream(self, messages: Sequence[Message], settings: ChatSettings) -> Iterator[str]:
        """Yield the assistant's answer to ``messages`` piece by piece, as tokens are decoded.
        Closing the iterator early stops the generation."""
        ...

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens of ``messages`` rendered with the generation prompt (the usage's prompt tokens)."""
        ...

    def describe(self) -> dict[str, str]:
        """What is loaded, as short name/value strings (model, backend, device, context, ...)."""
        ...

    def reseed(self, seed: int | None) -> None:
        """Restart the sampling random stream from ``seed`` (None: a fresh random seed)."""
        ...


def open_chat(ref: str | None = None, device: str = "auto", *, quantize: str = "auto",
              context: int | None = None) -> ChatBackend:
    """A chat backend for ``ref``, opened by the first plugin that serves it (``gentool_open_chat``).

    ``ref``: None (the plugin's default, the newest gpt run for the gpt plugin), a checkpoint
    file, a run folder or name, ``hf://owner/name``, or what a plugin knows (a transformers model
    folder or hub id, a ``.gguf`` file). ``device``: ``auto`` (cuda > mps > cpu), ``cpu``, ``cuda``,
    ``cuda:N``, ``mps``. ``quantize`` (``auto|none|bf16|int8|int4``) and ``context`` (most positions
    kept in view) reach plugins that load pretrained models; others ignore them.
    """
    import os

    from gentool.devices import pick_device
    from gentool.registry_access import get_registry

    if ref is not None and (not isinstance(ref, (str, os.PathLike)) or not str(ref).strip()):
        raise GentoolError(f"the chat model must be a non-empty string or path (or None), got {type(ref).__name__} "
                           f"{ref!r}"[:160])
    if not isinstance(device, str):
        raise GentoolError(f"device must be a string (auto, cpu, cuda, cuda:N, mps), got {type(device).__name__}")
    reg = get_registry()
    if not reg.pm.hook.gentool_open_chat.get_hookimpls():
        raise GentoolError(NO_CHAT_PLUGIN)
    if quantize not in QUANTIZE:
        raise GentoolError(f"quantize must be one of {', '.join(QUANTIZE)}, not {quantize!r}"[:160])
    if context is not None and (isinstance(context, bool) or not isinstance(context, int) or context < 2):
        raise GentoolError(f"context must be a whole number of at least 2 (or None), not {context!r}"[:160])
    options = {"quantize": quantize, "context": context}
    backend = reg.pm.hook.gentool_open_chat(ref=None if ref is None else str(ref), device=pick_device(device),
                                            options=options)
    if backend is None:
        raise GentoolError(f"no installed plugin opens {ref!r} as a chat model" if ref is not None else NO_CHAT_PLUGIN)
    return backend


__all__ = ["ChatBackend", "ChatSettings", "MAX_SEED", "Message", "QUANTIZE", "open_chat"]
