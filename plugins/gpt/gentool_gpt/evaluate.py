"""Scoring a ``gpt`` checkpoint: held-out loss, perplexity, bits per character; for chat models,
how often answers close with ``<|eot|>`` and keep to the chat template.

Bits per character are total nats over the held-out tokens divided by the number of characters
those tokens spell, over ln 2, so a BPE model and a character model compare fairly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from gentool.config import flag_value
from gentool.errors import DataError

from gentool_gpt.data import eval_windows
from gentool_gpt.loading import load_gpt
from gentool_gpt.task import EVAL_BATCH, masked_loss


@torch.no_grad()
def text_metrics(model: Any, tokenizer: Any, text: str, device: torch.device,
                 block_size: int | None = None) -> dict[str, float]:
    """Loss (nats per token), perplexity and bits per character over all of ``text``, scored in
    consecutive windows of the model's context."""
    T = block_size or model.block_size
    stream = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    try:
        x, y = eval_windows(stream, T)
    except ValueError as exc:  # a held-out text shorter than one context window
        raise DataError(f"{exc}: give a longer text with --data FILE") from None
    total, count = 0.0, 0
    for i in range(0, len(x), EVAL_BATCH):
        t, c = masked_loss(model(x[i:i + EVAL_BATCH].to(device)), y[i:i + EVAL_BATCH].to(device))
        total, count = total + float(t), count + int(c)
    scored = y.reshape(-1).tolist()  # an <|unk|> stood for one character of the text
    unk = getattr(tokenizer, "unk_id", None)
    chars = len(tokenizer.decode([i for i in scored if i != unk])) + sum(1 for i in scored if i == unk)
    loss = total / count
    return {"val_loss": loss, "perplexity": math.exp(min(loss, 50.0)),
            "bits_per_char": total / max(1, chars) / math.log(2),
            "tokens": count, "chars": chars}


@torch.no_grad()
def chat_metrics(model: Any, tokenizer: Any, convs: list, *, max_tokens: int = 200, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> dict[str, float]:
    """Answer each conversation's last user turn; count answers that end with ``<|eot|>`` and
    that hold no other special token (no role token, no ``<|bos|>``): they respect the template."""
    from gentool_gpt.chat_template import render
    from gentool_gpt.generate import generate

    eot = tokenizer.eot_id
    others = set(tokenizer.special_ids) - {eot}
    ended = clean = n = 0
    lengths = []
    for conv in convs:
        last = max(i for i, m in enumerate(conv) if m["role"] == "assistant")
        prompt = render(tokenizer, conv[:last], add_generation_prompt=True)
        # decoding stops at the first <|eot|> (not yielded): fewer than max_tokens + 1 tokens
        # back means the answer closed its turn within max_tokens
        out = list(generate(model, prompt, max_new_tokens=max_tokens + 1, temperature=temperature,
                            generator=generator, stop_ids={eot}))
        stopped = len(out) <= max_tokens
        answer = out[:max_tokens]
        ended += stopped
        clean += stopped and not (set(answer) & others)
        lengths.append(len(answer))
        n += 1
    return {"chat_answers": n, "chat_eot_rate": ended / max(1, n), "chat_template_rate": clean / max(1, n),
            "chat_mean_answer_tokens": sum(lengths) / max(1, n)}


def evaluate(job: Any) -> dict[str, Any]:
    """The ``gentool_evaluate`` hook."""
    opts = dict(job.options)
    max_tokens = flag_value(opts, "max_tokens", int, 200, minimum=1)
    temperature = flag_value(opts, "temperature", float, 0.0, minimum=0)
    n_conv = flag_value(opts, "conversations", int, 50, minimum=1)
    model, tok = load_gpt(job.checkpoint, job.device)
    extra = job.checkpoint.extra
    out: dict[str, Any] = {"tokenizer": tok.kind, "parameters": model.num_parameters()}
    out.update(text_metrics(model, tok, job.data.text, job.device))
    if extra.get("kind") == "sft":
        from pathlib import Path

        from gentool_gpt.sft import load_conversations, pack, split_conversations

        cfg = job.checkpoint.config
        path = extra.get("sft_file") or cfg.get("sft")
        if path and (Path(path).exists() or cfg.get("sft") == "builtin"):
            convs = load_conversations(cfg.get("sft") if cfg.get("sft") == "builtin" else path)
            _, held = split_conversations(convs, float(cfg.get("sft_val_fraction", 0.1)))
            ids, labels = pack(tok, held)
            T = model.block_size
            n = (len(ids) - 1) // T
            x = torch.tensor(ids[: n * T]).view(n, T)
            y = torch.tensor(labels[1: n * T + 1]).view(n, T)
            total, count = 0.0, 0
            with torch.no_grad():
                for i in range(0, n, EVAL_BATCH):
                    t, c = masked_loss(model(x[i:i + EVAL_BATCH].to(job.device)), y[i:i + EVAL_BATCH].to(job.device))
                    total, count = total + float(t), count + int(c)
            if count:
                out["sft_val_loss"] = total / count
            else:  # held-out conversations shorter than one window: no assistant token scored
                out["sft_note"] = f"held-out conversations shorter than one context window ({T} tokens): no sft_val_loss"
            gen = torch.Generator().manual_seed(job.seed)
            out.update(chat_metrics(model, tok, held[:n_conv], max_tokens=max_tokens, temperature=temperature,
                                    generator=gen))
        else:
            out["chat_note"] = f"conversations file {path} not found: chat metrics skipped"
    return out
