"""Read GGUF files (llama.cpp's format) as Llama-family checkpoints in Hugging Face form.

A GGUF file is a header (metadata keys and values, then a table of tensors: name, shape, ggml type,
offset) followed by the aligned tensor data. This module parses the header itself (a bounded,
pickle-free walk over a read-only memory map, fast enough for ``gentool info``), dequantizes the
tensors one at a time with the ``gguf`` package (``gguf.quants.dequantize``), and hands back:

- the model's configuration as a ``config.json``-style dict (``LlamaForCausalLM``,
  ``MistralForCausalLM`` or ``Qwen2ForCausalLM``),
- its tensors under transformers' names, with llama.cpp's q/k row permutation undone for the
  architectures whose converter applies it, so that they equal the original Hugging Face weights,
- a ``tokenizers.Tokenizer`` rebuilt from the metadata (byte-level BPE for ``gpt2`` vocabularies,
  SentencePiece-style BPE with byte fallback for ``llama`` ones), the chat template and the special
  token ids.

    >>> info = describe_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")      # metadata only
    >>> ckpt = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")          # tensors in float32

Every failure a user can cause (not a GGUF file, a truncated one, an architecture or a quantization
type this reader does not handle, missing tensors) is a :class:`gentool.CheckpointError` whose one
line names the file.
"""

from __future__ import annotations

import math
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gentool import CheckpointError

__all__ = ["GGUFCheckpoint", "describe_gguf", "read_gguf", "is_gguf_file", "SUPPORTED_ARCHITECTURES"]

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32  # llama.cpp's, when general.alignment is absent
_MAX_DIMS = 4  # GGML_MAX_DIMS

# GGUF metadata value types: the fixed-size ones as struct codes; 8 is a string, 9 an array.
_SCALAR_CODES = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_NUMPY_CODES = {0: "u1", 1: "i1", 2: "u2", 3: "i2", 4: "u4", 5: "i4", 6: "f4", 7: "?", 10: "u8", 11: "i8", 12: "f8"}
_STRING, _ARRAY = 8, 9

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
_TOKEN_NORMAL, _TOKEN_UNKNOWN, _TOKEN_CONTROL, _TOKEN_USER_DEFINED, _TOKEN_UNUSED, _TOKEN_BYTE = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class _Family:
    """How one GGUF architecture maps onto a transformers class."""

    model_type: str
    hf_class: str
    permuted_qk: bool  # llama.cpp's converter interleaves q/k rows for its "normal" (non-NeoX) rope
    qkv_bias: bool  # the architecture always has q/k/v biases (Qwen2)


_FAMILIES: dict[str, _Family] = {
    "llama": _Family("llama", "LlamaForCausalLM", permuted_qk=True, qkv_bias=False),
    "mistral": _Family("mistral", "MistralForCausalLM", permuted_qk=True, qkv_bias=False),
    "qwen2": _Family("qwen2", "Qwen2ForCausalLM", permuted_qk=False, qkv_bias=True),
}
SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(_FAMILIES)

# GGUF tensor names (per block) -> transformers names
_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_REQUIRED_BLOCK = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                   "ffn_down")
# tensors llama.cpp writes that have no transformers parameter: rope frequency factors (read apart)
# and the rotary inverse frequencies some old conversions carried
_SKIPPED = ("rope_freqs.weight",)
_SKIPPED_BLOCK = ("attn_rot_embd",)

# llama.cpp's pre-tokenizer regexes (llama-vocab.cpp), by tokenizer.ggml.pre. Each list is applied
# in turn, every regex splitting the pieces the previous one left ("isolated" matches).
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_PRE_SPLITS: dict[str, list[str]] = {
    **{name: [_LLAMA3_SPLIT] for name in ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                                           "dbrx", "smaug-bpe")},
    **{name: [_QWEN2_SPLIT] for name in ("qwen2", "deepseek-r1-qwen", "stablelm2", "megrez")},
    # digits one by one, then GPT-2's split (SmolLM's tokenizer.json: Digits(individual) + ByteLevel)
    **{name: [r"\p{N}", _GPT2_SPLIT] for name in ("smollm", "starcoder", "refact", "command-r", "codeshell",
                                                  "exaone", "minerva-7b")},
    **{name: [_GPT2_SPLIT] for name in ("gpt-2", "gpt2", "mpt", "olmo", "jais", "default")},
}

# llama.cpp looks a whole pre-token up in the vocabulary before merging for these (Llama 3's
# tokenizer.json says "ignore_merges": true)
_IGNORE_MERGES = frozenset({"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral"})

# control tokens that end a turn in the chat formats of the families we read (llama.cpp's own list
# of end-of-generation tokens is similar), besides the eos/eot/eom ids the metadata names
_END_OF_TURN_TEXTS = frozenset({"<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                "<|endoftext|>", "<|end_of_text|>", "</s>", "<EOT>", "<|return|>"})


class _Truncated(Exception):
    """The header promises more bytes than the file has."""


@dataclass(frozen=True)
class _TensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order (slowest first); GGUF stores the fastest dimension first
    qtype: int  # ggml type id
    offset: int  # from the start of the data section
    nbytes: int | None  # None when the type is unknown to the gguf package


@dataclass
class _Header:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[_TensorInfo]
    data_start: int
    file_size: int


class _Cursor:
    """Bounds-checked little-endian reads from a byte buffer."""

    def __init__(self, buf: Any, size: int):
        self.buf, self.size, self.pos = buf, size, 0

    def need(self, count: int) -> None:
        if count < 0 or self.pos + count > self.size:
            raise _Truncated

    def unpack(self, code: str) -> Any:
        fmt = "<" + code
        width = struct.calcsize(fmt)
        self.need(width)
        value = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += width
        return value[0] if len(value) == 1 else value

    def raw(self, count: int) -> bytes:
        self.need(count)
        data = bytes(self.buf[self.pos:self.pos + count])
        self.pos += count
        return data

    def string(self) -> str:
        data = self.raw(self.unpack("Q"))
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        length = self.unpack("Q")
        self.need(length)
        self.pos += length

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in _SCALAR_CODES:
            return self.unpack(_SCALAR_CODES[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.unpack("IQ")
            if etype in _NUMPY_CODES:  # numbers: one bounded slice, no per-element Python work
                width = np.dtype(_NUMPY_CODES[etype]).itemsize
                self.need(count * width)
                values = np.frombuffer(self.buf, dtype="<" + _NUMPY_CODES[etype], count=count, offset=self.pos)
                self.pos += count * width
                return values.tolist() if keep else _ArrayStub(count)
            if etype == _STRING:
                if keep:
                    return [self.string() for _ in range(count)]
                for _ in range(count):
                    self.skip_string()
                return _ArrayStub(count)
            if etype == _ARRAY:
                return [self.value(_ARRAY, keep) for _ in range(count)]
            raise ValueError(f"an array of unknown value type {etype}")
        raise ValueError(f"a metadata value of unknown type {vtype}")


@dataclass(frozen=True)
class _ArrayStub:
    """An array value left unread: only its length is known."""

    count: int

    def __len__(self) -> int:
        return self.count


# metadata arrays read in full by read_gguf; describe_gguf reads none of them
_TOKENIZER_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                     "tokenizer.ggml.scores")


def _quant_traits() -> tuple[dict[int, tuple[int, int]], dict[int, str], set[int]]:
    """(block elements and bytes by ggml type id, names, ids gguf.quants.dequantize handles)."""
    import gguf
    from gguf.quants import _type_traits  # the package's table of block codecs

    sizes = {int(qtype): (int(block), int(nbytes)) for qtype, (block, nbytes) in gguf.GGML_QUANT_SIZES.items()}
    names = {int(qtype): qtype.name for qtype in gguf.GGMLQuantizationType}
    readable = {int(gguf.GGMLQuantizationType.F32), int(gguf.GGMLQuantizationType.F16)}
    readable |= {int(qtype) for qtype in _type_traits}
    return sizes, names, readable


def _open(path: Path) -> tuple[np.memmap, int]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such GGUF file")
    size = path.stat().st_size
    if size < 24:
        with open(path, "rb") as handle:
            head = handle.read(4)
        what = "truncated (shorter than a GGUF header)" if head == _MAGIC[:len(head)] and head else \
            "not a GGUF file (it does not start with 'GGUF')"
        raise CheckpointError(f"{path}: {what}")
    return np.memmap(path, dtype=np.uint8, mode="r"), size


def _read_header(path: str | os.PathLike[str], arrays: tuple[str, ...] = ()) -> tuple[_Header, np.memmap]:
    """Parse a GGUF file's metadata and tensor table; string/number arrays other than ``arrays`` are
    left as :class:`_ArrayStub` (their length only)."""
    path = Path(path)
    blob, size = _open(path)
    cursor = _Cursor(blob, size)
    try:
        if cursor.raw(4) != _MAGIC:
            raise CheckpointError(f"{path}: not a GGUF file (it does not start with 'GGUF')")
        version = cursor.unpack("I")
        if version & 0xFFFF == 0 and version != 0:
            raise CheckpointError(f"{path}: a big-endian GGUF file, which this reader does not handle")
        if version not in (2, 3):
            raise CheckpointError(f"{path}: GGUF version {version}; this reader handles versions 2 and 3")
        tensor_count, kv_count = cursor.unpack("QQ")
        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = cursor.string()
            vtype = cursor.unpack("I")
            metadata[key] = cursor.value(vtype, keep=key in arrays)
        alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise CheckpointError(f"{path}: bad general.alignment {alignment!r} in its metadata")
        sizes, _, _ = _quant_traits()
        entries = []
        for _ in range(tensor_count):
            name = cursor.string()
            n_dims = cursor.unpack("I")
            if not 0 < n_dims <= _MAX_DIMS:
                raise CheckpointError(f"{path}: tensor {name!r} has {n_dims} dimensions (GGUF allows 1 to 4)")
            dims = cursor.unpack(f"{n_dims}Q")
            dims = (dims,) if isinstance(dims, int) else tuple(dims)
            qtype, offset = cursor.unpack("IQ")
            entries.append((name, dims, qtype, offset))
    except _Truncated:
        raise CheckpointError(f"{path}: truncated GGUF file (its header runs past the end of the file)") from None
    except ValueError as error:
        raise CheckpointError(f"{path}: damaged GGUF header ({error})") from None

    data_start = -(-cursor.pos // alignment) * alignment
    tensors = []
    for name, dims, qtype, offset in entries:
        count = math.prod(dims)
        nbytes = None
        if qtype in sizes:
            block, block_bytes = sizes[qtype]
            if dims[0] % block:
                raise CheckpointError(f"{path}: tensor {name!r} has rows of {dims[0]} values, not a multiple of "
                                      f"its type's block of {block}")
            nbytes = count // block * block_bytes
            if data_start + offset + nbytes > size:
                raise CheckpointError(f"{path}: truncated GGUF file (tensor {name!r} runs past the end of the "
                                      f"file: {size:,} bytes, {data_start + offset + nbytes:,} needed)")
        tensors.append(_TensorInfo(name, tuple(reversed(dims)), qtype, offset, nbytes))
    return _Header(path, version, metadata, tensors, data_start, size), blob


def is_gguf_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a file that starts with the GGUF magic bytes (reads 4 bytes)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == _MAGIC
    except OSError:
        return False


def _f32(value: Any) -> Any:
    """A float32 metadata value as the shortest decimal that rounds to it (1e-05, not 9.99e-06)."""
    if isinstance(value, float):
        return float(str(np.float32(value)))
    return value


def _arch_key(meta: dict[str, Any], arch: str, key: str, default: Any = None) -> Any:
    return meta.get(f"{arch}.{key}", default)


def _quant_summary(header: _Header, names: dict[int, str]) -> tuple[str, dict[str, int], str | None]:
    """(short text such as "Q4_1 (mostly)", tensor counts by type, general.file_type's name)."""
    counts = Counter(names.get(info.qtype, f"type {info.qtype}") for info in header.tensors)
    file_type = header.metadata.get("general.file_type")
    file_type_name = None
    if isinstance(file_type, int):
        import gguf

        try:
            file_type_name = gguf.LlamaFileType(file_type).name
        except ValueError:
            file_type_name = f"file type {file_type}"
    if file_type_name and file_type_name.startswith("MOSTLY_"):
        text = f"{file_type_name[len('MOSTLY_'):]} (mostly)"
    elif file_type_name and file_type_name.startswith("ALL_"):
        text = file_type_name[len("ALL_"):]
    else:  # the commonest type among the matrices
        matrices = Counter(names.get(info.qtype, f"type {info.qtype}") for info in header.tensors
                           if len(info.shape) > 1)
        top = (matrices or counts).most_common(1)
        text = top[0][0] if top else "none"
        if len(counts) > 1:  # as llama.cpp's MOSTLY_*: the matrices quantized, the norms kept in F32
            text += " (mostly)"
    return text, dict(counts.most_common()), file_type_name


def describe_gguf(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A GGUF file's metadata for ``gentool info``: no tensor is read, no vocabulary decoded.

    Keys: ``path``, ``format`` ("GGUF v3"), ``size_bytes``, ``architecture``, ``supported`` (whether
    :func:`read_gguf` takes it), ``name``, ``layers``, ``heads``, ``kv_heads``, ``head_dim``,
    ``embedding_width``, ``ffn_width``, ``context_length``, ``vocab_size``, ``rope_theta``,
    ``norm_eps``, ``rope_scaling`` (type or None), ``file_type``, ``quant`` ("Q4_1 (mostly)"),
    ``tensor_types`` ({"Q4_1": 210, "F32": 61, ...}), ``tensors``, ``parameters``, ``tokenizer``
    (tokenizer.ggml.model), ``tokenizer_pre``, ``chat_template`` (bool), ``tied_embeddings``.
    Values the file does not state are None.
    """
    header, _ = _read_header(path)
    meta = header.metadata
    arch = meta.get("general.architecture")
    sizes, names, readable = _quant_traits()
    quant, counts, file_type_name = _quant_summary(header, names)
    heads = _arch_key(meta, arch, "attention.head_count")
    width = _arch_key(meta, arch, "embedding_length")
    head_dim = _arch_key(meta, arch, "attention.key_length")
    if head_dim is None and isinstance(heads, int) and isinstance(width, int) and heads:
        head_dim = width // heads
    vocab = _arch_key(meta, arch, "vocab_size")
    if vocab is None and "tokenizer.ggml.tokens" in meta:
        vocab = len(meta["tokenizer.ggml.tokens"])
    eps = _arch_key(meta, arch, "attention.layer_norm_rms_epsilon", _arch_key(meta, arch, "attention.layer_norm_epsilon"))
    names_present = {info.name for info in header.tensors}
    return {
        "path": str(header.path),
        "format": f"GGUF v{header.version}",
        "size_bytes": header.file_size,
        "architecture": arch,
        "supported": arch in _FAMILIES and all(info.qtype in readable for info in header.tensors),
        "name": meta.get("general.name"),
        "layers": _arch_key(meta, arch, "block_count"),
        "heads": heads,
        "kv_heads": _arch_key(meta, arch, "attention.head_count_kv", heads),
        "head_dim": head_dim,
        "embedding_width": width,
        "ffn_width": _arch_key(meta, arch, "feed_forward_length"),
        "context_length": _arch_key(meta, arch, "context_length"),
        "vocab_size": vocab,
        "rope_theta": _f32(_arch_key(meta, arch, "rope.freq_base")),
        "norm_eps": _f32(eps),
        "rope_scaling": _arch_key(meta, arch, "rope.scaling.type",
                                  "llama3 (rope_freqs)" if "rope_freqs.weight" in names_present else None),
        "file_type": file_type_name,
        "quant": quant,
        "tensor_types": counts,
        "tensors": len(header.tensors),
        "parameters": sum(math.prod(info.shape) for info in header.tensors),
        "tokenizer": meta.get("tokenizer.ggml.model"),
        "tokenizer_pre": meta.get("tokenizer.ggml.pre"),
        "chat_template": isinstance(meta.get("tokenizer.chat_template"), str),
        "tied_embeddings": "output.weight" not in names_present,
    }


@dataclass
class GGUFCheckpoint:
    """A GGUF file read as a Hugging Face-style Llama-family checkpoint (see :func:`read_gguf`)."""

    arch: str  # general.architecture as the file says: llama, mistral, qwen2
    config: dict[str, Any]  # config.json form (model_type, architectures, hidden_size, ...)
    tensors: dict[str, torch.Tensor] = field(repr=False)  # transformers names, dequantized
    tokenizer: Any = field(repr=False)  # tokenizers.Tokenizer
    chat_template: str | None = field(repr=False)
    special: dict[str, Any] = field(repr=False)  # bos_id, eos_id, eot_id, pad_id, control_ids, eog_ids, ...
    quant: str  # "Q4_1 (mostly)", "F32", ...
    path: Path | None = None
    tensor_types: dict[str, str] = field(default_factory=dict, repr=False)  # transformers name -> ggml type
    rope_factors: torch.Tensor | None = field(default=None, repr=False)  # llama.cpp's rope_freqs, when present
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)  # scalar metadata (arrays left out)


def read_gguf(path: str | os.PathLike[str], dtype: torch.dtype = torch.float32) -> GGUFCheckpoint:
    """Read a Llama / Mistral / Qwen2 GGUF file: config, tensors (dequantized to ``dtype``, one at a
    time), tokenizer, chat template and special tokens.

    The tensors carry transformers' ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` names
    (``model.embed_tokens.weight``, ``model.layers.N.self_attn.q_proj.weight`` ..., ``lm_head.weight``
    only when the file has an untied output matrix) and equal the weights the file was converted
    from (up to quantization): llama.cpp's converter interleaves the q and k rows of each head for
    the llama architecture, and this is undone.
    """
    header, blob = _read_header(path, arrays=_TOKENIZER_ARRAYS)
    path = header.path
    meta = header.metadata
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise CheckpointError(f"{path}: no general.architecture in its metadata")
    family = _FAMILIES.get(arch)
    if family is None:
        raise CheckpointError(f"{path}: architecture {arch!r} is not supported (supported: "
                              f"{', '.join(SUPPORTED_ARCHITECTURES)})")
    sizes, names, readable = _quant_traits()
    unreadable = sorted({names.get(info.qtype, f"type {info.qtype}") for info in header.tensors
                         if info.qtype not in readable or info.nbytes is None})
    if unreadable:
        raise CheckpointError(f"{path}: quantization type {', '.join(unreadable)} is not supported "
                              f"(F32, F16, BF16, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 and K-quants are)")

    by_name = {info.name: info for info in header.tensors}
    config = _config(path, arch, family, meta, by_name)
    _check_tensors(path, config, by_name)
    rope_factors = None
    if "rope_freqs.weight" in by_name:
        rope_factors = _dequantize(blob, header, by_name["rope_freqs.weight"]).to(torch.float32)
        config["rope_scaling"] = _llama3_scaling(rope_factors, config) or config.get("rope_scaling")

    tokenizer, special = _tokenizer(path, meta)
    if config.get("bos_token_id") is None:
        config["bos_token_id"] = special.get("bos_id")
    if config.get("eos_token_id") is None:
        config["eos_token_id"] = special.get("eos_id")

    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    tensors: dict[str, torch.Tensor] = {}
    tensor_types: dict[str, str] = {}
    for info in header.tensors:
        hf_name = _hf_name(info.name)
        if hf_name is None:
            continue
        tensor = _dequantize(blob, header, info)
        if family.permuted_qk and ".attn_q." in info.name:
            tensor = _unpermute(tensor, heads)
        elif family.permuted_qk and ".attn_k." in info.name:
            tensor = _unpermute(tensor, kv_heads)
        tensors[hf_name] = tensor.to(dtype).contiguous()
        tensor_types[hf_name] = names[info.qtype]
        del tensor

    quant, _, _ = _quant_summary(header, names)
    scalars = {key: value for key, value in meta.items()
               if not isinstance(value, (list, _ArrayStub)) and key != "tokenizer.chat_template"}
    chat_template = meta.get("tokenizer.chat_template")
    return GGUFCheckpoint(arch=arch, config=config, tensors=tensors, tokenizer=tokenizer,
                          chat_template=chat_template if isinstance(chat_template, str) else None,
                          special=special, quant=quant, path=path, tensor_types=tensor_types,
                          rope_factors=rope_factors, metadata=scalars)


def _hf_name(gguf_name: str) -> str | None:
    """The transformers name of a GGUF tensor, None for those skipped; a KeyError for unknown ones."""
    if gguf_name in _SKIPPED:
        return None
    stem, _, suffix = gguf_name.rpartition(".")
    if suffix not in ("weight", "bias"):
        raise KeyError(gguf_name)
    if stem in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit():
        if parts[2] in _SKIPPED_BLOCK:
            return None
        if parts[2] in _BLOCK_NAMES:
            return f"model.layers.{int(parts[1])}.{_BLOCK_NAMES[parts[2]]}.{suffix}"
    raise KeyError(gguf_name)


def _config(path: Path, arch: str, family: _Family, meta: dict[str, Any],
            by_name: dict[str, _TensorInfo]) -> dict[str, Any]:
    def need(key: str) -> Any:
        value = meta.get(f"{arch}.{key}")
        if value is None:
            raise CheckpointError(f"{path}: its metadata lacks {arch}.{key}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise CheckpointError(f"{path}: {arch}.{key} is {value!r}, not a number (per-layer values are not "
                                  f"supported)")
        return value

    hidden = need("embedding_length")
    heads = need("attention.head_count")
    kv_heads = meta.get(f"{arch}.attention.head_count_kv", heads)
    if not isinstance(kv_heads, int) or isinstance(kv_heads, bool) or kv_heads <= 0 or heads % kv_heads:
        raise CheckpointError(f"{path}: {arch}.attention.head_count_kv is {kv_heads!r}, which does not divide "
                              f"{heads} heads")
    head_dim = meta.get(f"{arch}.attention.key_length") or hidden // heads
    embed = by_name.get("token_embd.weight")
    if embed is None:
        raise CheckpointError(f"{path}: missing tensor token_embd.weight")
    vocab = embed.shape[0]
    eps = meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6 if arch == "qwen2" else 1e-5)
    config: dict[str, Any] = {
        "model_type": family.model_type,
        "architectures": [family.hf_class],
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": need("feed_forward_length"),
        "num_hidden_layers": need("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": _f32(eps),
        "rope_theta": _f32(meta.get(f"{arch}.rope.freq_base", 1000000.0 if arch == "qwen2" else 10000.0)),
        "max_position_embeddings": meta.get(f"{arch}.context_length", 2048),
        "tie_word_embeddings": "output.weight" not in by_name,
        "attention_bias": "blk.0.attn_q.bias" in by_name,
        "rope_scaling": _rope_scaling(meta, arch),
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "torch_dtype": "float32",
    }
    if family.model_type == "qwen2":
        config["use_sliding_window"] = False
    return config


def _rope_scaling(meta: dict[str, Any], arch: str) -> dict[str, Any] | None:
    """rope_scaling from {arch}.rope.scaling.* (linear and yarn); llama3's comes from rope_freqs."""
    kind = meta.get(f"{arch}.rope.scaling.type")
    factor = meta.get(f"{arch}.rope.scaling.factor")
    if kind in (None, "none") or not factor or factor == 1.0:
        return None
    scaling: dict[str, Any] = {"rope_type": kind, "factor": _f32(factor)}
    original = meta.get(f"{arch}.rope.scaling.original_context_length")
    if original:
        scaling["original_max_position_embeddings"] = original
    return scaling


def _llama3_scaling(factors: torch.Tensor, config: dict[str, Any]) -> dict[str, Any] | None:
    """Llama 3.1-style rope_scaling recovered from the per-frequency factors llama.cpp stores.

    transformers' llama3 rope divides the frequency of dimension pair i by ``factor`` where its
    wavelength exceeds ``original / low_freq_factor``, leaves it where the wavelength is below
    ``original / high_freq_factor``, and blends in between; llama.cpp's converter writes the resulting
    divisors as rope_freqs. The two thresholds only matter as wavelengths, so ``original`` is taken as
    8192 (Llama 3.1/3.2's) unless the metadata gives it, and the factors are fitted to it. Returns None
    when the factors are not of that shape.
    """
    f = factors.double()
    factor = float(f.max())
    if factor <= 1.0 or float(f.min()) < 1.0 - 1e-6:
        return None
    half = f.numel()
    dim = 2 * half
    inv_freq = 1.0 / (config["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    wavelen = 2 * math.pi / inv_freq
    original = (config.get("rope_scaling") or {}).get("original_max_position_embeddings") or 8192
    # 1/f = (1 - s)/factor + s  =>  s = (1/f - 1/factor) / (1 - 1/factor), and s = original/wavelen*a - b
    smooth = (1.0 / f - 1.0 / factor) / (1.0 - 1.0 / factor)
    x = original / wavelen  # smooth = (x - low) / (high - low), clamped to [0, 1]
    middle = (smooth > 1e-6) & (smooth < 1 - 1e-6)
    scaled_x, unscaled_x = x[smooth <= 1e-6], x[smooth >= 1 - 1e-6]
    if int(middle.sum()) >= 2:  # a line through the blend
        slope, intercept = np.polyfit(x[middle].numpy(), smooth[middle].numpy(), 1)
        candidates = [(-intercept / slope, (1.0 - intercept) / slope)]
    elif int(middle.sum()) == 1:  # one blended pair: put one threshold at a neighbour, the other follows
        x0, s0 = float(x[middle]), float(smooth[middle])
        candidates = []
        if len(scaled_x):
            low = float(scaled_x.max())
            candidates.append((low, low + (x0 - low) / s0))
        if len(unscaled_x):
            high = float(unscaled_x.min())
            candidates.append(((x0 - s0 * high) / (1 - s0), high))
    elif len(scaled_x) and len(unscaled_x):  # no blend: the thresholds sit at the neighbours
        candidates = [(float(scaled_x.max()), float(unscaled_x.min()))]
    else:
        return None
    for low, high in candidates:
        if not high > low:
            continue
        scaling = {"rope_type": "llama3", "factor": round(factor, 6), "low_freq_factor": round(float(low), 6),
                   "high_freq_factor": round(float(high), 6), "original_max_position_embeddings": int(original)}
        # the fitted values must give the stored factors back
        if torch.allclose(_llama3_factors(scaling, wavelen), f, rtol=1e-4, atol=1e-4):
            return scaling
    return None


def _llama3_factors(scaling: dict[str, Any], wavelen: torch.Tensor) -> torch.Tensor:
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    smooth = ((original / wavelen - low) / (high - low)).clamp(0.0, 1.0)
    return 1.0 / ((1.0 - smooth) / factor + smooth)


def _check_tensors(path: Path, config: dict[str, Any], by_name: dict[str, _TensorInfo]) -> None:
    """Every tensor is one we can place, every one a block needs is there, with the right shape."""
    for name in by_name:
        try:
            _hf_name(name)
        except KeyError:
            raise CheckpointError(f"{path}: tensor {name!r} has no place in a {config['architectures'][0]} "
                                  f"(is this a {config['model_type']} model?)") from None
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    q_rows = config["num_attention_heads"] * config["head_dim"]
    kv_rows = config["num_key_value_heads"] * config["head_dim"]
    ffn = config["intermediate_size"]
    expected = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,)}
    if "output.weight" in by_name:
        expected["output.weight"] = (vocab, hidden)
    shapes = {"attn_norm": (hidden,), "attn_q": (q_rows, hidden), "attn_k": (kv_rows, hidden),
              "attn_v": (kv_rows, hidden), "attn_output": (hidden, q_rows), "ffn_norm": (hidden,),
              "ffn_gate": (ffn, hidden), "ffn_up": (ffn, hidden), "ffn_down": (hidden, ffn)}
    biases = {"attn_q": (q_rows,), "attn_k": (kv_rows,), "attn_v": (kv_rows,), "attn_output": (hidden,)}
    for layer in range(config["num_hidden_layers"]):
        for part in _REQUIRED_BLOCK:
            expected[f"blk.{layer}.{part}.weight"] = shapes[part]
        if config["attention_bias"]:
            for part in ("attn_q", "attn_k", "attn_v"):
                expected[f"blk.{layer}.{part}.bias"] = biases[part]
        if f"blk.{layer}.attn_output.bias" in by_name:
            expected[f"blk.{layer}.attn_output.bias"] = biases["attn_output"]
    if config["model_type"] == "qwen2" and not config["attention_bias"]:
        raise CheckpointError(f"{path}: missing tensor blk.0.attn_q.bias (a qwen2 model has q/k/v biases)")
    missing = [name for name in expected if name not in by_name]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(f"{path}: missing tensor {missing[0]}{more}")
    for name, shape in expected.items():
        if by_name[name].shape != shape:
            raise CheckpointError(f"{path}: tensor {name} has shape {list(by_name[name].shape)}, "
                                  f"the metadata implies {list(shape)}")
    layers = {int(name.split(".")[1]) for name in by_name if name.startswith("blk.")}
    if layers and max(layers) >= config["num_hidden_layers"]:
        raise CheckpointError(f"{path}: tensors for block {max(layers)}, but the metadata says "
                              f"{config['num_hidden_layers']} blocks")


def _dequantize(blob: np.memmap, header: _Header, info: _TensorInfo) -> torch.Tensor:
    """One tensor as a float32 (or float16/bfloat16, as stored) torch tensor that owns its memory."""
    import gguf
    from gguf.quants import dequantize

    start = header.data_start + info.offset
    raw = blob[start:start + info.nbytes]
    qtype = gguf.GGMLQuantizationType(info.qtype)
    try:
        if qtype == gguf.GGMLQuantizationType.F32:
            return torch.from_numpy(np.array(raw.view(np.float32)).reshape(info.shape))
        if qtype == gguf.GGMLQuantizationType.F16:
            return torch.from_numpy(np.array(raw.view(np.float16)).reshape(info.shape))
        if qtype == gguf.GGMLQuantizationType.BF16:
            return torch.from_numpy(np.array(raw.view(np.int16))).view(torch.bfloat16).reshape(info.shape)
        rows = raw.reshape(-1, info.nbytes // max(1, math.prod(info.shape[:-1])))
        values = dequantize(rows, qtype)
    except (ValueError, NotImplementedError) as error:
        raise CheckpointError(f"{header.path}: cannot dequantize tensor {info.name} ({qtype.name}: {error})") \
            from None
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32).reshape(info.shape))


def _unpermute(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k permutation: per head, the converter reorders the rows from the halves
    layout (first half of the rotary pairs, then the second) to interleaved pairs; this puts them back.
    Works on weights (rows x columns) and biases (rows)."""
    rows = tensor.shape[0]
    rest = tensor.shape[1:]
    return tensor.reshape(heads, rows // heads // 2, 2, *rest).transpose(1, 2).reshape(rows, *rest)


def _permute(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's converter's q/k permutation (the inverse of :func:`_unpermute`), for tests and writers."""
    rows = tensor.shape[0]
    rest = tensor.shape[1:]
    return tensor.reshape(heads, 2, rows // heads // 2, *rest).transpose(1, 2).reshape(rows, *rest)


def _tokenizer(path: Path, meta: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A tokenizers.Tokenizer from the tokenizer.ggml.* metadata, and the special token ids."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if kind is None or not isinstance(tokens, list) or not tokens:
        raise CheckpointError(f"{path}: no tokenizer in its metadata (tokenizer.ggml.model/tokens)")
    types = meta.get("tokenizer.ggml.token_type")
    if not isinstance(types, list) or len(types) != len(tokens):
        types = [_TOKEN_NORMAL] * len(tokens)
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)  # a few vocabularies repeat a string: the first id wins

    def token_id(key: str) -> int | None:
        value = meta.get(f"tokenizer.ggml.{key}")
        return value if isinstance(value, int) and 0 <= value < len(tokens) else None

    add_bos = meta.get("tokenizer.ggml.add_bos_token")
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    if kind == "gpt2":
        merges_text = meta.get("tokenizer.ggml.merges")
        if not isinstance(merges_text, list):
            raise CheckpointError(f"{path}: a gpt2 (byte-level BPE) tokenizer without tokenizer.ggml.merges")
        merges = [tuple(merge.split(" ", 1)) for merge in merges_text if " " in merge]
        pre = meta.get("tokenizer.ggml.pre", "default")
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False,
                                         ignore_merges=pre in _IGNORE_MERGES))
        splits = _PRE_SPLITS.get(pre)
        if splits is None:  # unknown pre-tokenizer: GPT-2's split, the byte-level default
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        else:
            tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Split(Regex(split), behavior="isolated") for split in splits]
                + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tokenizer.decoder = decoders.ByteLevel()
        add_bos = bool(add_bos) if add_bos is not None else False
    elif kind == "llama":
        scores = meta.get("tokenizer.ggml.scores")
        if not isinstance(scores, list) or len(scores) != len(tokens):
            raise CheckpointError(f"{path}: a llama (SentencePiece) tokenizer without tokenizer.ggml.scores")
        unk = token_id("unknown_token_id")
        merges = _merges_from_scores(tokens, scores, types, vocab)
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=tokens[unk] if unk is not None
                                         else None, fuse_unk=True, byte_fallback=True))
        prefix = meta.get("tokenizer.ggml.add_space_prefix", True)
        steps = [normalizers.Prepend("\u2581")] if prefix else []
        tokenizer.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", "\u2581")])
        tokenizer.decoder = decoders.Sequence(
            [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
            + ([decoders.Strip(" ", 1, 0)] if prefix else []))
        add_bos = bool(add_bos) if add_bos is not None else True  # llama.cpp's default for SentencePiece
    else:
        raise CheckpointError(f"{path}: tokenizer model {kind!r} is not supported (gpt2 and llama are)")

    control = [index for index, kind_ in enumerate(types) if kind_ == _TOKEN_CONTROL]
    user = [index for index, kind_ in enumerate(types) if kind_ == _TOKEN_USER_DEFINED]
    tokenizer.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in control
                                  if vocab.get(tokens[i]) == i])
    if user:
        tokenizer.add_tokens([AddedToken(tokens[i], special=False, normalized=False) for i in user
                              if vocab.get(tokens[i]) == i])

    special: dict[str, Any] = {name: token_id(key) for name, key in (
        ("bos_id", "bos_token_id"), ("eos_id", "eos_token_id"), ("eot_id", "eot_token_id"),
        ("eom_id", "eom_token_id"), ("pad_id", "padding_token_id"), ("unk_id", "unknown_token_id"),
        ("sep_id", "seperator_token_id"))}
    special = {name: value for name, value in special.items() if value is not None}
    special["control_ids"] = control
    eog = {special.get(name) for name in ("eos_id", "eot_id", "eom_id")} - {None}
    eog |= {index for index in control if tokens[index] in _END_OF_TURN_TEXTS}
    special["eog_ids"] = sorted(eog)
    special["add_bos"], special["add_eos"] = add_bos, add_eos
    special["tokens"] = {name: tokens[value] for name, value in special.items()
                         if name.endswith("_id") and isinstance(value, int)}

    bos, eos = special.get("bos_id"), special.get("eos_id")
    template_single, template_pair, used = "$A", "$A $B", []
    if add_bos and bos is not None:
        template_single, template_pair = f"{tokens[bos]} {template_single}", f"{tokens[bos]} $A {tokens[bos]} $B"
        used.append((tokens[bos], bos))
    if add_eos and eos is not None:
        template_single, template_pair = f"{template_single} {tokens[eos]}", f"{template_pair} {tokens[eos]}"
        used.append((tokens[eos], eos))
    if used:
        tokenizer.post_processor = processors.TemplateProcessing(single=template_single, pair=template_pair,
                                                                 special_tokens=list(dict(used).items()))
    elif kind == "gpt2":
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer, special


def _merges_from_scores(tokens: list[str], scores: list[float], types: list[int],
                        vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's score-driven merging: every way to cut a normal token
    into two tokens of the vocabulary is a merge, ranked by the merged token's score (best first)."""
    mergeable = {token for token, kind in zip(tokens, types) if kind in (_TOKEN_NORMAL, _TOKEN_USER_DEFINED)}
    ranked = []
    for index, token in enumerate(tokens):
        if types[index] != _TOKEN_NORMAL or len(token) < 2:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in mergeable and right in mergeable:
                ranked.append((-scores[index], vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]
