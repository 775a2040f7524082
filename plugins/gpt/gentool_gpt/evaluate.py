"""Scoring a ``gpt`` checkpoint: held-out loss, perplexity, bits per character; for chat models
also the loss on held-out conversations and how often answers close with ``<|eot|>`` and keep to
the chat template.

Bits per character are total nats over the held-out tokens divided by the number of characters
those tokens spell, over ln 2, so a BPE model and a character model compare fairly.

A chat model fine-tuned from a pretrained run (``--resume RUN --sft FILE``) carries its origin in
every checkpoint (``finetuned_from``: the base run, its checkpoint, step and data). Its text metrics
are then on the held-out part of the base's data (what the core loads by default: the fine-tuning
run inherits the base's ``--data``), scored in windows of the base's context so they compare with
the base run's own evaluation; its chat metrics on the held-out conversations of its ``--sft``
file. ``settings`` says which data and file each group of numbers comes from.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gentool
import torch
from gentool import DataError

from gentool_gpt.data import eval_windows
from gentool_gpt.loading import load_gpt
from gentool_gpt.task import EVAL_BATCH, masked_loss

#: Window of the text metrics of a pretrained model file (-c FILE.gguf): its own context may be
#: 8,192 tokens or more, and a CPU pays for attention over a window as the window's square.
PRETRAINED_WINDOW = 2048

#: Share of a held-out text's characters outside a char vocabulary above which we warn that the
#: text is probably not what the model was trained on.
UNKNOWN_WARN = 0.01


@torch.no_grad()
def text_metrics(model: Any, tokenizer: Any, text: str, device: torch.device,
                 block_size: int | None = None, fit: bool = False) -> dict[str, float]:
    """Loss (nats per token), perplexity and bits per character over all of ``text``, scored in
    consecutive windows of ``block_size`` tokens (default: the model's context); with ``fit``, a
    text shorter than one window is scored in one window of its own length."""
    T = block_size or model.block_size
    stream = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    if fit and len(stream) >= 3:
        T = min(T, len(stream) - 1)
    try:
        x, y = eval_windows(stream, T)
    except ValueError as exc:  # a held-out text shorter than one context window
        raise DataError(f"{exc}: give a longer text with --data FILE (--split all scores the whole file, "
                        "not its last tenth)") from None
    total, count = _score(model, x, y, device)
    scored = y.reshape(-1).tolist()  # an <|unk|> stood for one character of the text
    unk = getattr(tokenizer, "unk_id", None)
    chars = len(tokenizer.decode([i for i in scored if i != unk])) + sum(1 for i in scored if i == unk)
    loss = total / count
    return {"val_loss": loss, "perplexity": math.exp(min(loss, 50.0)),
            "bits_per_char": total / max(1, chars) / math.log(2),
            "tokens": count, "chars": chars}


def _score(model: Any, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[float, int]:
    """Summed cross-entropy and the number of scored targets over windows ``x``, ``y``."""
    total, count = 0.0, 0
    for i in range(0, len(x), EVAL_BATCH):
        t, c = masked_loss(model(x[i:i + EVAL_BATCH].to(device)), y[i:i + EVAL_BATCH].to(device))
        total, count = total + float(t), count + int(c)
    return total, count


@torch.no_grad()
def sft_metrics(model: Any, tokenizer: Any, convs: list, device: torch.device) -> dict[str, float]:
    """Loss on the assistant tokens of ``convs`` (packed as in training, in windows of the
    model's context): ``sft_val_loss`` and the number of tokens scored."""
    from gentool_gpt.sft import pack, windows

    ids, labels = pack(tokenizer, convs)
    x, y = windows(ids, labels, model.block_size, tokenizer.pad_id)
    total, count = _score(model, x, y, device)
    return {"sft_val_loss": total / count if count else None, "sft_tokens": count}


@torch.no_grad()
def chat_metrics(model: Any, tokenizer: Any, convs: list, *, max_tokens: int = 200, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> dict[str, float]:
    """Answer each conversation's last user turn; count answers that end with ``<|eot|>`` and
    that hold no other special token (no role token, no ``<|bos|>``): they respect the template.

    An answer may grow until the context is full (then it did not end). ``chat_prompts_cut``
    counts conversations longer than the context, which the model saw only the end of."""
    from gentool_gpt.chat_template import render
    from gentool_gpt.generate import generate

    eot = tokenizer.eot_id
    others = set(tokenizer.special_ids) - {eot}
    context = int(model.block_size)
    ended = clean = n = cut = 0
    lengths = []
    for conv in convs:
        last = max(i for i, m in enumerate(conv) if m["role"] == "assistant")
        prompt = render(tokenizer, conv[:last], add_generation_prompt=True)
        cut += len(prompt) >= context
        limit = min(max_tokens, max(1, context - len(prompt)))
        # decoding stops at the first <|eot|> (not yielded): fewer than limit + 1 tokens back
        # means the answer closed its turn within limit
        out = list(generate(model, prompt, max_new_tokens=limit + 1, temperature=temperature,
                            generator=generator, stop_ids={eot}))
        stopped = len(out) <= limit
        answer = out[:limit]
        ended += stopped
        clean += stopped and not (set(answer) & others)
        lengths.append(len(answer))
        n += 1
    return {"chat_answers": n, "chat_eot_rate": ended / max(1, n), "chat_template_rate": clean / max(1, n),
            "chat_mean_answer_tokens": sum(lengths) / max(1, n), "chat_prompts_cut": cut}


def _sft_conversations(source: str) -> list | None:
    """The conversations a checkpoint was fine-tuned on, or None when the file is gone."""
    from gentool_gpt.sft import load_conversations

    if source != "builtin" and not Path(source).exists():
        return None
    return load_conversations(source)


def evaluate(job: Any) -> gentool.EvaluateResult:
    """The ``gentool_evaluate`` hook (``job.options`` is a
    :class:`~gentool_gpt.configs.GPTEvaluateOptions`, checked by the core)."""
    opts = job.options
    ckpt = job.checkpoint
    extra, cfg = ckpt.extra, ckpt.config
    model, tok = load_gpt(ckpt, job.device)
    chat = extra.get("kind") == "sft"
    source = extra.get("source") if extra.get("kind") == "pretrained-file" else None
    base = ckpt.meta.get("finetuned_from") or {}
    metrics: dict[str, Any] = {"parameters": model.num_parameters()}
    warnings: list[str] = []
    settings = {
        "kind": "chat fine-tuned (sft)" if chat else "pretrained",
        "tokenizer": f"{tok.kind}, {tok.vocab_size} tokens",
        "context": f"{model.block_size} tokens",
    }
    if source:  # a .gguf or Hugging Face folder given with -c
        settings["kind"] = f"pretrained {source.get('arch')} model ({source.get('format')}" + (
            f", {source.get('quantization')} dequantized)" if source.get("format") == "gguf" else ")")
    if base:
        settings.update({"base_run": str(base.get("run")), "base_checkpoint": str(base.get("checkpoint")),
                         "base_step": str(base.get("step")), "base_data": str(base.get("data"))})

    # -- text: the held-out part of the data (the base's data for a fine-tuned run) ------------
    data_name = getattr(job.data, "name", "")
    # scored in windows of the pretraining context, so the figures compare with the base run's own
    pretrained = (base.get("config") or {}).get("block_size") or cfg.get("block_size") or model.block_size
    window = min(int(pretrained), model.block_size)
    if source:  # a long-context model: windows of PRETRAINED_WINDOW tokens (attention grows as its square)
        window = min(window, PRETRAINED_WINDOW)
    before = tok.unknown_count
    metrics.update(text_metrics(model, tok, job.data.text, job.device, block_size=window, fit=bool(source)))
    unknown = tok.unknown_count - before
    settings["text_data"] = f"{data_name} ({job.data_split} split)"
    settings["text_windows"] = f"{window} tokens"
    if tok.kind == "char" and unknown > UNKNOWN_WARN * max(1, len(job.data.text)):
        warnings.append(f"{unknown} of the {len(job.data.text)} characters of {data_name} are not in the "
                        "model's vocabulary: it was probably trained on other text (pass --data with that text)")
    if base.get("data") and data_name and str(base["data"]) != data_name:
        warnings.append(f"the text metrics are on {data_name}, but the base run {base.get('run')} was "
                        f"pretrained on {base['data']}")
    if chat and not base:
        warnings.append(f"this chat model was trained on conversations only (no pretrained base run): its text "
                        f"metrics measure {data_name or 'text'} it never trained on")

    # -- chat: the held-out conversations of the --sft file --------------------------------------
    if chat:
        source = str(extra.get("sft_file") or cfg.get("sft") or "builtin")
        if cfg.get("sft") == "builtin":
            source = "builtin"
        settings["sft_file"] = source
        convs = _sft_conversations(source)
        if convs is None:
            warnings.append(f"conversations file {source} not found: chat metrics skipped")
            metrics.update({"sft_val_loss": None})
        else:
            from gentool_gpt.sft import split_conversations

            fraction = float(cfg.get("sft_val_fraction", 0.1))
            _, held = split_conversations(convs, fraction)
            settings["sft_held_out"] = f"the last {len(held)} of {len(convs)} conversations"
            sft = sft_metrics(model, tok, held, job.device)
            metrics.update(sft)
            if sft["sft_val_loss"] is None:
                warnings.append("the held-out conversations hold no assistant token: no sft_val_loss")
            gen = torch.Generator().manual_seed(job.seed)
            answered = chat_metrics(model, tok, held[:opts.conversations], max_tokens=opts.max_tokens,
                                    temperature=opts.temperature, generator=gen)
            cut = answered.pop("chat_prompts_cut")
            metrics.update(answered)
            decoding = "greedy" if opts.temperature == 0 else f"temperature {opts.temperature}"
            settings["chat_decoding"] = (f"{decoding}, at most {opts.max_tokens} tokens per answer, "
                                         f"{answered['chat_answers']} conversations")
            if cut:
                warnings.append(f"{cut} of {answered['chat_answers']} held-out conversations are longer than the "
                                f"model's context ({model.block_size} tokens): it saw only their end")
    return gentool.EvaluateResult(metrics=metrics, settings=settings, warnings=warnings)
