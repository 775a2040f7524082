"""What ``gentool chat`` talks to: a gentool ``gpt`` checkpoint, or any transformers causal LM.

Both backends share one small interface (:class:`Backend`): ``chat_stream(messages, settings)``
yields the answer's text in pieces as tokens are decoded, ``count_tokens(messages)`` says how much
context a conversation takes, ``describe()`` what is loaded. :func:`open_backend` decides from what
``--model`` points at:

* nothing: the newest ``gpt`` run (its best checkpoint, else its last);
* a gentool checkpoint file, a run folder, a run name, ``hf://owner/repo`` (a ``gentool push``),
  or a folder whose ``model.safetensors`` is a gentool checkpoint: our model, our chat template,
  our KV-cache decoding (:func:`gentool_gpt.generate.generate`);
* any other folder with a ``config.json``, or a hub id (``owner/name``, looked up in the local
  Hugging Face cache; downloaded only when the hub is reachable and ``HF_HUB_OFFLINE`` is unset):
  transformers' ``AutoModelForCausalLM`` with the tokenizer's own chat template. Weights load from
  safetensors only and no repository code runs (``trust_remote_code`` stays off).

Both keep to the model's context: a conversation longer than it is cut to its newest tokens
(:attr:`Backend.cut_tokens` says how many went, and ``gentool chat`` says so), and an answer that
fills the context stops there (:attr:`Backend.stop_reason` ``"context full"``).

torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from gentool import ChatSettings, CheckpointError, GentoolError

if TYPE_CHECKING:
    import torch

MODEL = "gpt"
Message = Mapping[str, str]
HF_INSTALL_HINT = "the transformers backend needs transformers: pip install 'gentool-gpt[hf]'"


#: The decoding settings live in the core now (``gentool.ChatSettings``, the same fields and
#: ``check()``); the old name stays for code written against this module.
Settings = ChatSettings


class Backend:
    """A chat model: streams answers to conversations in OpenAI messages form (keeps the core's
    ``gentool.ChatBackend`` protocol, so ``gentool.open_chat`` and ``gentool serve`` use it)."""

    #: Longest context the model takes, in tokens.
    context_length: int = 0
    #: Why the last answer ended: ``"end of turn"``, ``"max tokens"`` or ``"context full"``.
    stop_reason: str = ""
    #: Tokens the last answer produced.
    last_tokens: int = 0
    #: Tokens of the last conversation left out (its oldest) because it was longer than the context.
    cut_tokens: int = 0

    def __init__(self) -> None:
        self._generator: "torch.Generator | None" = None
        self.seed_used: int | None = None

    def chat_stream(self, messages: Sequence[Message], settings: Settings) -> Iterator[str]:
        """Yield the assistant's answer to ``messages`` piece by piece."""
        raise NotImplementedError

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens of ``messages`` rendered with the generation prompt."""
        raise NotImplementedError

    def describe(self) -> dict[str, str]:
        """What is loaded, for ``/status``: name, kind, device, size, context..."""
        raise NotImplementedError

    def _fit(self, ids: list[int]) -> list[int]:
        """The newest tokens of a rendered conversation that leave room for one answer token;
        records how many were left out in :attr:`cut_tokens`."""
        keep = max(1, self.context_length - 1)
        self.cut_tokens = max(0, len(ids) - keep)
        return ids[-keep:]

    def reseed(self, seed: int | None) -> None:
        """Restart the sampling random stream: from ``seed``, or from a fresh random seed."""
        import torch

        if seed is not None:
            Settings(seed=seed).check()  # one line for a bad seed, not torch's RuntimeError
        self.seed_used = seed if seed is not None else secrets.randbits(62)
        self._generator = torch.Generator(device="cpu").manual_seed(self.seed_used)

    @property
    def generator(self) -> "torch.Generator":
        if self._generator is None:
            self.reseed(None)
        return self._generator  # type: ignore[return-value]


#: Below this many parameters a CPU decodes one sequence fastest on one thread: each step is many
#: tiny operations, and spreading them over cores costs more in synchronisation than it saves (on
#: a busy 2-core machine, 2 threads decoded the 0.8M-parameter gpt 10x slower than 1).
SMALL_MODEL = 20_000_000


def _threads_for(model: "torch.nn.Module", device: "torch.device | str") -> None:
    import torch

    if torch.device(device).type == "cpu" and sum(p.numel() for p in model.parameters()) < SMALL_MODEL:
        torch.set_num_threads(1)


def _device_text(device: str) -> str:
    import torch

    return f"cpu, {torch.get_num_threads()} thread(s)" if device == "cpu" else device


# -- ours ---------------------------------------------------------------------------------------
class GPTBackend(Backend):
    """A gentool ``gpt`` checkpoint with our chat template and KV-cache decoding."""

    def __init__(self, checkpoint: str | os.PathLike, device: "torch.device | str" = "cpu",
                 quantize: str = "auto"):
        super().__init__()
        from gentool import load_checkpoint

        from gentool_gpt.loading import load_gpt

        self.path = Path(checkpoint)
        self.checkpoint = load_checkpoint(self.path, model=MODEL)
        self.model, self.tokenizer = load_gpt(self.checkpoint, device)
        self.device = str(device)
        _threads_for(self.model, device)
        self.context_length = int(self.model.block_size)
        self.n_parameters = sum(p.numel() for p in self.model.parameters())
        self.weights = "float32 (the trained weights)"
        if quantize in ("bf16", "int8", "int4"):  # asked for: our decoder over those weights
            import torch

            from gentool_gpt.decoder import Decoder

            self.model = Decoder(self.model, self.context_length, quantize="none" if quantize == "bf16" else quantize,
                                 dtype=torch.bfloat16 if quantize == "bf16" else torch.float32)
            self.weights = f"{quantize} (as asked)"
        sp = self.tokenizer.special
        # Any special token but <|unk|> ends the turn: <|eot|> is the template's end, and a role
        # token or <|bos|> means the model began another turn instead of closing its own.
        self.stop_ids = {i for s, i in sp.items() if s != "<|unk|>"}

    def _render(self, messages: Sequence[Message]) -> list[int]:
        from gentool_gpt.chat_template import render

        try:
            return render(self.tokenizer, messages, add_generation_prompt=True)
        except ValueError as exc:
            raise GentoolError(f"bad conversation: {exc}") from None

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self._render(messages))

    def chat_stream(self, messages: Sequence[Message], settings: Settings) -> Iterator[str]:
        from gentool_gpt.generate import IncrementalDecoder, generate

        ids = self._fit(self._render(messages))
        decoder = IncrementalDecoder(lambda xs: self.tokenizer.decode(xs, skip_special=True))
        self.stop_reason, self.last_tokens = "end of turn", 0
        room = self.context_length - len(ids)  # the answer stops when the context is full
        limit = min(settings.max_tokens, room)
        stream = generate(self.model, ids, max_new_tokens=limit, temperature=settings.temperature,
                          top_k=settings.top_k, top_p=settings.top_p, generator=self.generator,
                          stop_ids=self.stop_ids)
        for tok in stream:
            self.last_tokens += 1
            piece = decoder.push(tok)
            if piece:
                yield piece
        if self.last_tokens >= limit:
            self.stop_reason = "max tokens" if limit == settings.max_tokens else "context full"
        tail = decoder.flush()
        if tail:
            yield tail

    def describe(self) -> dict[str, str]:
        cfg = self.checkpoint.config
        sft = cfg.get("sft") or (self.checkpoint.extra.get("sft_file") if self.checkpoint.extra.get("kind") == "sft" else None)
        n = self.n_parameters
        return {
            "model": f"gentool gpt {self.path}",
            "weights": self.weights,
            "backend": "gentool (KV-cache decoding)",
            "device": _device_text(self.device),
            "parameters": f"{n:,}",
            "context": f"{self.context_length} tokens",
            "tokenizer": f"{self.tokenizer.kind}, {self.tokenizer.vocab_size} tokens",
            "trained": f"step {self.checkpoint.step}, "
                       + (f"chat fine-tuned on {Path(str(sft)).name}" if sft
                          else "pretrained only (no --sft): answers will not follow the chat format"),
        }


# -- transformers -------------------------------------------------------------------------------
def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


class HFBackend(Backend):
    """Any causal LM that transformers' ``AutoModelForCausalLM`` loads, with its own chat template."""

    def __init__(self, ref: str, device: "torch.device | str" = "cpu"):
        super().__init__()
        try:
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise GentoolError(HF_INSTALL_HINT) from None
        transformers.logging.set_verbosity_error()
        if hasattr(transformers.utils.logging, "disable_progress_bar"):
            transformers.utils.logging.disable_progress_bar()
        self.ref, self.device = ref, str(device)
        kw: dict[str, Any] = {"trust_remote_code": False}
        if _offline():
            kw["local_files_only"] = True
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(ref, **kw)
            self.model = AutoModelForCausalLM.from_pretrained(ref, use_safetensors=True, **kw)
        except Exception as exc:  # missing files, unknown architecture, no safetensors weights, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            where = "folder" if Path(ref).exists() else "hub id (looked up in the local cache)" if _offline() else "hub id"
            raise GentoolError(f"transformers cannot load {ref!r} as a {where}: {first}") from None
        self.model.to(device).eval()
        _threads_for(self.model, device)
        cfg = self.model.config
        limits = [getattr(cfg, "max_position_embeddings", None), getattr(self.tokenizer, "model_max_length", None)]
        limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < 10**7]
        self.context_length = min(limits) if limits else 2048
        self.has_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.stop_ids = self._eos_ids()
        import inspect

        # transformers 5 renamed the forward's ``past_key_values`` to ``cache`` (4.x knows only the former)
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.model.config, self.tokenizer):
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value if v is not None)
        return ids

    def _render(self, messages: Sequence[Message]) -> list[int]:
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        if self.has_template:
            try:
                text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            except Exception as exc:  # a template may refuse (e.g. no system role)
                raise GentoolError(f"the chat template of {self.ref} refused this conversation: {exc}") from None
        else:  # a base model without a template: plain transcript
            text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in msgs) + "Assistant:"
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self._render(messages))

    def chat_stream(self, messages: Sequence[Message], settings: Settings) -> Iterator[str]:
        import torch

        from gentool_gpt.generate import IncrementalDecoder, sample_next

        ids = self._fit(self._render(messages))
        decoder = IncrementalDecoder(lambda xs: self.tokenizer.decode(xs, skip_special_tokens=True))
        self.stop_reason, self.last_tokens = "end of turn", 0
        dev = torch.device(self.device)
        past = None
        step = torch.tensor([ids], dtype=torch.long, device=dev)
        length = len(ids)
        while True:
            with torch.inference_mode():
                out = self.model(input_ids=step, use_cache=True, **{self._cache_arg: past})
            past = getattr(out, self._cache_arg)
            logits = out.logits[0, -1]
            tok = sample_next(logits, temperature=settings.temperature, top_k=settings.top_k,
                              top_p=settings.top_p, generator=self.generator)
            if tok in self.stop_ids:
                break
            self.last_tokens += 1
            piece = decoder.push(tok)
            if piece:
                yield piece
            if self.last_tokens >= settings.max_tokens:
                self.stop_reason = "max tokens"
                break
            length += 1
            if length >= self.context_length:
                self.stop_reason = "context full"
                break
            step = torch.tensor([[tok]], dtype=torch.long, device=dev)
        tail = decoder.flush()
        if tail:
            yield tail

    def describe(self) -> dict[str, str]:
        n = sum(p.numel() for p in self.model.parameters())
        arch = ",".join(getattr(self.model.config, "architectures", None) or [type(self.model).__name__])
        return {
            "model": self.ref,
            "backend": f"transformers ({arch})",
            "device": _device_text(self.device),
            "parameters": f"{n:,}",
            "context": f"{self.context_length} tokens",
            "tokenizer": f"{type(self.tokenizer).__name__}, {len(self.tokenizer)} tokens",
            "template": "the tokenizer's chat template" if self.has_template
                        else "none in the tokenizer: a plain 'Role: text' transcript",
        }


# -- choosing -----------------------------------------------------------------------------------
def _is_gentool_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a gentool checkpoint; a damaged ``.safetensors`` file (truncated, a bad
    header) raises its own CheckpointError: that, not "not a gentool checkpoint", is what is wrong."""
    from gentool import read_header

    try:
        meta = read_header(path).get("__metadata__") or {}
    except CheckpointError:
        if path.suffix == ".safetensors":
            raise
        return False
    return "gentool" in meta


def resolve_model(ref: str | None) -> tuple[str, str]:
    """``("gpt", checkpoint path)`` or ``("hf", folder or hub id)`` for a ``--model`` value."""
    from gentool import resolve_checkpoint, runs_dir

    if ref is None:
        try:
            return "gpt", str(resolve_checkpoint(MODEL, None))
        except CheckpointError:
            raise GentoolError(
                f"no trained gpt model in {runs_dir() / MODEL}: train one with `gentool train gpt`, then "
                "fine-tune it to chat with `gentool train gpt --resume RUN --sft conversations.json` "
                "(or pass --model PATH|HUB_ID)") from None
    if not ref.strip():  # not the current folder, nor the default model in disguise
        raise GentoolError("--model is empty: name a run, a checkpoint, a model folder or a hub id (or leave it out)")
    if ref.startswith("hf://"):
        return "gpt", str(resolve_checkpoint(MODEL, ref))
    path = Path(ref).expanduser()
    if path.is_file():
        if _is_gentool_checkpoint(path):
            return "gpt", str(path)
        if path.name == "config.json":
            return "hf", str(path.parent)
        raise GentoolError(f"{path} is not a gentool checkpoint; for a transformers model give its folder")
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors", "model.safetensors"):
            if (path / name).is_file() and _is_gentool_checkpoint(path / name):
                return "gpt", str(path / name)
        if (path / "config.json").is_file():
            return "hf", str(path)
        raise GentoolError(f"{path} holds neither a gentool checkpoint nor a transformers model (config.json)")
    if (runs_dir() / MODEL / ref).is_dir():
        return "gpt", str(resolve_checkpoint(MODEL, ref))
    head, _, run = ref.partition("/")
    if head == MODEL and run and (runs_dir() / MODEL / run).is_dir():  # MODEL/RUN, as gentool sample takes it
        return "gpt", str(resolve_checkpoint(MODEL, run))
    if ref.count("/") == 1 and not ref.startswith((".", "/", "~")):
        return "hf", ref
    raise GentoolError(f"--model {ref!r}: not a file, a folder, a run of gpt in {runs_dir() / MODEL}, "
                       "nor a hub id (owner/name)")


def open_backend(ref: str | None, device: "torch.device | str" = "cpu", *, quantize: str = "auto",
                 context: int | None = None) -> Backend:
    """The backend for ``--model ref`` (see the module docstring for the rules).

    A ``.gguf`` file, and a Hugging Face folder or hub id of an architecture gentool maps onto its
    own network (:data:`gentool_gpt.pretrained.ARCHITECTURES`), open as a
    :class:`~gentool_gpt.pretrained_chat.PretrainedBackend`: our decoder, with ``quantize``
    (auto|none|bf16|int8|int4) and at most ``context`` positions. Other architectures go to
    transformers (:class:`HFBackend`).
    """
    from gentool_gpt.pretrained import is_gguf, packaged

    ref = packaged(ref) or ref  # a short name of a model a package ships (smollm2)
    if ref is not None and not ref.startswith("hf://") and is_gguf(Path(ref).expanduser()):
        return _pretrained(ref, device, quantize, context)
    kind, where = resolve_model(ref)
    folder = _hf_folder(where) if kind == "hf" else None
    if folder is not None and _decodes_itself(folder):
        return _pretrained(str(folder) if where.count("/") != 1 or Path(where).exists() else where,
                           device, quantize, context)
    if context is not None:
        raise GentoolError("--context is for pretrained models (a .gguf, a Llama-family Hugging Face folder); "
                           "this model keeps its own")
    if kind == "gpt":
        return GPTBackend(where, device, quantize=quantize)
    if quantize not in ("auto", "none"):
        raise GentoolError(f"--quantize {quantize} is for models gentool decodes itself; transformers runs this one "
                           "as it is")
    return HFBackend(where, device)  # transformers looks a hub id up itself (its files, its own way)


def _pretrained(ref: str, device: "torch.device | str", quantize: str, context: int | None) -> Backend:
    from gentool_gpt.pretrained_chat import PretrainedBackend

    return PretrainedBackend(ref, device, quantize=quantize, context=context)


def _hf_folder(where: str) -> Path | None:
    """The local folder of a transformers model named by ``where`` (a folder, or a hub id found in
    the cache or downloaded), or None where transformers is to look it up itself."""
    path = Path(where).expanduser()
    if path.is_dir():
        return path
    try:
        from gentool_gpt.pretrained import hub_folder

        return hub_folder(where)
    except GentoolError:
        return None  # HFBackend says why in its own words


def _decodes_itself(folder: Path) -> bool:
    """Whether gentool's own decoder runs the model in ``folder`` (its architecture and tokenizer)."""
    from gentool_gpt.pretrained import architecture, read_hf_config

    try:
        return architecture(read_hf_config(folder)) is not None and (folder / "tokenizer.json").is_file()
    except CheckpointError:
        return False
