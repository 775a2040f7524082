"""Export a ``gpt`` checkpoint in the layout transformers loads: ``RUN/hf/``.

``model.safetensors`` (Llama parameter names; our stacked q/k/v and gate/up matrices split), ``config.json``
(``LlamaForCausalLM``), ``generation_config.json`` (stops at ``<|eot|>``), ``tokenizer.json``
(a ``tokenizers`` model: byte-level BPE, or a word-level model over single characters for a char
tokenizer) and ``tokenizer_config.json`` with the chat template. Then
``AutoModelForCausalLM.from_pretrained("runs/gpt/run1/hf")`` gives the same logits as our model,
and ``AutoTokenizer`` the same ids (a test checks both).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gentool import load_checkpoint, write_atomic

from gentool_gpt.chat_template import JINJA_TEMPLATE

if TYPE_CHECKING:
    from gentool_gpt.model import GPT
    from gentool_gpt.tokenizer import Tokenizer


def llama_config(model: "GPT", tokenizer: "Tokenizer") -> dict[str, Any]:
    """transformers' config fields for this network: ``LlamaForCausalLM``, or ``Qwen2ForCausalLM``
    for a network with q/k/v biases (Llama's ``attention_bias`` would put one on o_proj too)."""
    c = model.cfg
    arch, kind = ("Qwen2ForCausalLM", "qwen2") if c.qkv_bias else ("LlamaForCausalLM", "llama")
    rope = {"rope_type": "default", "rope_theta": c.rope_theta, **(c.rope_scaling or {})}
    return {
        "architectures": [arch], "model_type": kind,
        "vocab_size": c.vocab_size, "hidden_size": c.n_embd, "intermediate_size": c.mlp_hidden,
        "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head, "num_key_value_heads": c.kv_heads,
        "head_dim": c.head_dim, "max_position_embeddings": c.block_size, "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta, "rope_parameters": rope, "rope_scaling": c.rope_scaling,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
        "tie_word_embeddings": c.tie_embeddings, "initializer_range": 0.02, "use_cache": True,
        "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eot_id, "pad_token_id": tokenizer.pad_id,
        "torch_dtype": "float32", "dtype": "float32",
    }


def llama_state_dict(model: "GPT") -> dict[str, Any]:
    """Our weights under Llama's names: stacked q/k/v and gate/up matrices split in rows."""
    out: dict[str, Any] = {}
    c = model.cfg
    qkv_sizes = [c.n_head * c.head_dim, c.kv_heads * c.head_dim, c.kv_heads * c.head_dim]
    for k, v in model.state_dict().items():
        v = v.detach().float().cpu()
        if k.startswith("rotary."):
            continue
        if ".self_attn.qkv_proj." in k:  # weight and, for Qwen2, bias
            for name, part in zip(("q_proj", "k_proj", "v_proj"), v.split(qkv_sizes, dim=0)):
                out[k.replace("qkv_proj", name)] = part.contiguous()
        elif k.endswith("mlp.gate_up_proj.weight"):
            for name, part in zip(("gate_proj", "up_proj"), v.chunk(2, dim=0)):
                out[k.replace("gate_up_proj", name)] = part.contiguous()
        else:
            out[k] = v.contiguous()
    return out


def export_hf(model: "GPT", tokenizer: "Tokenizer", folder: str | Path) -> Path:
    """Write ``model`` and ``tokenizer`` to ``folder`` in transformers' layout; return the folder."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = llama_state_dict(model)
    if model.cfg.tie_embeddings:
        tensors.pop("lm_head.weight", None)
    write_atomic(folder / "model.safetensors", save(tensors, metadata={"format": "pt"}))
    dump = lambda obj: (json.dumps(obj, indent=2) + "\n").encode()  # noqa: E731
    write_atomic(folder / "config.json", dump(llama_config(model, tokenizer)))
    write_atomic(folder / "generation_config.json", dump({
        "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eot_id, "pad_token_id": tokenizer.pad_id,
        "do_sample": True, "temperature": 0.8}))
    write_atomic(folder / "tokenizer.json", tokenizer.hf_tokenizer_json().encode())
    specials = {"bos_token": "<|bos|>", "eos_token": "<|eot|>", "pad_token": "<|pad|>", "unk_token": "<|unk|>"}
    write_atomic(folder / "tokenizer_config.json", dump({
        "tokenizer_class": "PreTrainedTokenizerFast", **specials,
        "additional_special_tokens": ["<|system|>", "<|user|>", "<|assistant|>"],
        "chat_template": JINJA_TEMPLATE, "model_max_length": model.cfg.block_size,
        "clean_up_tokenization_spaces": False}))
    write_atomic(folder / "special_tokens_map.json", dump(specials))
    return folder


def export_checkpoint(checkpoint: str | Path, folder: str | Path) -> Path:
    """Export a gentool ``gpt`` checkpoint file to ``folder``."""
    from gentool_gpt.loading import load_gpt

    model, tok = load_gpt(load_checkpoint(checkpoint, model="gpt"), "cpu")
    return export_hf(model, tok, folder)


def export_run(run_dir: str | Path, checkpoint: str | Path | None) -> Path | None:
    """After training: export ``checkpoint`` (the run's best) to ``RUN/hf``."""
    if checkpoint is None:
        return None
    return export_checkpoint(checkpoint, Path(run_dir) / "hf")
