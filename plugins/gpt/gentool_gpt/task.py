"""Training ``gpt`` through gentool's harness: pretraining on text and chat fine-tuning (SFT).

Both read random windows of a token stream; an "epoch" is ``iters_per_epoch`` steps, after which
the harness runs :meth:`LMTask.validate` (loss on fixed held-out windows), saves ``last`` and keeps
``best`` by validation loss. AdamW (no decay on norms and embeddings), linear warmup then cosine
decay per step over the run's ``total_steps`` (set by the harness), gradient clipping, autocast
from ``--precision`` (bf16 is about twice as fast on CPUs with bf16 instructions), optional
``torch.compile``. After training, ``RUN/hf/`` receives a transformers-loadable export of the best
weights.

Chat fine-tuning trains on windows of ``GPTTrainConfig.context`` tokens (``sft_block_size``, 256 by
default): longer than the pretraining's 64, which rotary positions allow (no weight depends on the
context length).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Mapping

import gentool
import torch
import torch.nn.functional as F
from gentool import ConfigError, DataError, Task

from gentool_gpt.configs import GPTTrainConfig
from gentool_gpt.data import eval_windows
from gentool_gpt.loading import MODULE, checkpoint_meta, model_config
from gentool_gpt.model import GPT
from gentool_gpt.tokenizer import Tokenizer

EVAL_BATCH = 64


def masked_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of cross-entropy over targets that are not -100, and their count."""
    total = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                            ignore_index=-100, reduction="sum")
    return total, (targets != -100).sum()


class LMTask(Task):
    """Next-token prediction on random windows of ``self.train_x`` (targets ``self.train_y``)."""

    monitor = "val_loss"
    monitor_mode = "min"

    def __init__(self, cfg: GPTTrainConfig, job: Any, tokenizer: Tokenizer,
                 train_stream: torch.Tensor, train_targets: torch.Tensor | None,
                 val_x: torch.Tensor, val_y: torch.Tensor, kind: str, base: Any = None):
        self.cfg, self.job, self.tokenizer, self.kind = cfg, job, tokenizer, kind
        self.lr = job.options.lr
        self.precision = job.options.precision
        self.train_x, self.train_y = train_stream, train_targets
        self.val_x, self.val_y = val_x, val_y
        self.gpt_cfg = model_config(cfg, tokenizer.vocab_size)
        self.model = GPT(self.gpt_cfg)
        if base is not None:  # fine-tuning: the base run's weights (none depends on the context length)
            base.load_into({MODULE: self.model})
        self.grad_clip = cfg.grad_clip or None
        self.forward_model: Any = self.model

    # -- harness contract ----------------------------------------------------------------------
    def modules(self) -> dict[str, torch.nn.Module]:
        return {MODULE: self.model}

    def to(self, device: torch.device) -> None:
        super().to(device)
        if self.cfg.compile:
            self.forward_model = torch.compile(self.model)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        decay, no_decay = [], []
        embed = self.model.model.embed_tokens.weight
        seen: set[int] = set()
        for p in self.model.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            (decay if p.dim() >= 2 and p is not embed else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        kwargs: dict[str, Any] = {"lr": self.lr, "betas": (0.9, self.cfg.beta2)}
        try:
            opt = torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            opt = torch.optim.AdamW(groups, foreach=True, **kwargs)
        return {"adamw": opt}

    def configure_schedulers(self, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, Any]:
        total = max(1, self.total_steps)  # set by the harness before this is called
        warm, floor = self.cfg.warmup_iters, self.cfg.min_lr_ratio

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / (warm + 1)
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        return {"cosine": torch.optim.lr_scheduler.LambdaLR(optimizers["adamw"], factor)}

    def steps_per_epoch(self, batch_size: int, world_size: int) -> int:
        return self.cfg.iters_per_epoch

    def batches(self, epoch: int, batch_size: int, rank: int, world_size: int, seed: int) -> Iterator[Any]:
        T = self.gpt_cfg.block_size
        offsets = torch.arange(T + 1)
        n = len(self.train_x) - T - 1
        for _ in range(self.cfg.iters_per_epoch):
            starts = torch.randint(n + 1, (batch_size,))  # global RNG: the harness restores it on resume
            idx = starts[:, None] + offsets[None, :]
            x = self.train_x[idx[:, :-1]]
            y = (self.train_y if self.train_y is not None else self.train_x)[idx[:, 1:]]
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def training_step(self, batch: Any, ctx: Any) -> Mapping[str, Any]:
        x, y = batch
        logits = self.forward_model(x)
        total, count = masked_loss(logits, y)
        loss = total / count.clamp(min=1)
        ctx.step(loss, "adamw")
        return {"loss": loss.detach()}

    def validate(self) -> dict[str, float]:
        total, count = 0.0, 0
        with gentool.autocast(self.device, self.precision):
            for i in range(0, len(self.val_x), EVAL_BATCH):
                x = self.val_x[i:i + EVAL_BATCH].to(self.device)
                y = self.val_y[i:i + EVAL_BATCH].to(self.device)
                t, c = masked_loss(self.model(x), y)
                total, count = total + float(t), count + int(c)
        loss = total / max(1, count)
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}

    def sample(self, n: int, generator: torch.Generator) -> list[str] | None:
        from gentool_gpt.generate import generate

        if self.kind == "sft":
            from gentool_gpt.chat_template import render

            prompt = render(self.tokenizer, [{"role": "user", "content": "Hello!"}], add_generation_prompt=True)
        else:
            prompt = start_ids(self.tokenizer)
        out = list(generate(self.model, prompt, max_new_tokens=120, temperature=0.8, generator=generator,
                            stop_ids={self.tokenizer.eot_id}))
        return [self.tokenizer.decode(prompt + out)]

    def checkpoint_meta(self) -> dict[str, Any]:
        more: dict[str, Any] = {"kind": self.kind}
        if self.kind == "sft":
            more["sft_file"] = sft_source(self.cfg.sft)
        return checkpoint_meta(self.gpt_cfg, self.tokenizer, **more)


def sft_source(sft: str | None) -> str:
    """How a checkpoint names its conversations: ``builtin``, or the file's absolute path."""
    if sft in (None, "", "builtin"):
        return "builtin"
    return str(Path(sft).expanduser().resolve())


def start_ids(tokenizer: Tokenizer) -> list[int]:
    """A neutral first token for unconditional samples: a newline if the vocabulary has one."""
    ids = tokenizer.encode("\n")
    return ids[-1:] if ids and ids[-1] != getattr(tokenizer, "unk_id", -1) else [tokenizer.bos_id]


# -- building a task from a job ---------------------------------------------------------------
def _held_out_text(job: Any) -> str:
    """The test split of the training data (the last 10 % of a text file or of ``tales``)."""
    ref = job.options.data
    try:
        if str(ref).strip().lower() == "tales":
            from gentool_gpt.data import load_tales

            return load_tales("test").text
        return gentool.load_dataset(ref, split="test").text
    except (DataError, AttributeError):
        return ""


def _tokenizer_for(cfg: GPTTrainConfig, base: Any, texts: list[str]) -> Tokenizer:
    """The base run's tokenizer when fine-tuning from one, else a new one trained on ``texts``."""
    if base is not None:
        if "tokenizer" not in base.extra:
            raise DataError(f"{base.path} carries no tokenizer")
        return Tokenizer.from_json(base.extra["tokenizer"])
    if cfg.tokenizer == "char":
        return Tokenizer.train_char("".join(texts))
    chunks = [t[i:i + 100_000] for t in texts for i in range(0, len(t), 100_000)]
    return Tokenizer.train_bpe(chunks, cfg.vocab_size)


def _chars(n: int) -> str:
    return f"{n} character" + ("" if n == 1 else "s")


def _long(ids: list[int]) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.long)


def pretrain_task(cfg: GPTTrainConfig, job: Any) -> LMTask:
    """Language modelling on ``job.data`` (train split); validation on its held-out split."""
    text = job.data.text
    held_out = _held_out_text(job)
    if len(held_out) < 10 * cfg.block_size:  # no usable test split: hold out the end of the training text
        cut = int(len(text) * 0.9)
        text, held_out = text[:cut], text[cut:]
    tok = _tokenizer_for(cfg, None, [text])
    stream = _long(tok.encode(text))
    val = _long(tok.encode(held_out))
    if len(stream) < cfg.block_size + 2 or len(val) < cfg.block_size + 2:
        raise DataError(f"{job.options.data} is too short for a context of {cfg.block_size} tokens "
                        "(lower --set block_size)")
    val_x, val_y = eval_windows(val, cfg.block_size, cfg.eval_tokens)
    return LMTask(cfg, job, tok, stream, None, val_x, val_y, kind="pretrain")


def sft_task(cfg: GPTTrainConfig, job: Any) -> LMTask:
    """Chat fine-tuning on ``cfg.sft``: the loss only on the assistant's turns, in windows of
    ``cfg.context`` tokens (longer than the base run's context by default)."""
    from gentool_gpt.sft import load_conversations, pack, pad_to, split_conversations, windows

    convs = load_conversations(cfg.sft)
    train_c, val_c = split_conversations(convs, cfg.sft_val_fraction)
    base = gentool.load_checkpoint(job.init_from, model="gpt") if job.init_from is not None else None
    tok = _tokenizer_for(cfg, base, [m["content"] for c in convs for m in c])
    before = tok.unknown_count
    train_ids, train_labels = pack(tok, train_c)
    val_ids, val_labels = pack(tok, val_c)
    if tok.unknown_count > before:
        gentool.warn(f"{_chars(tok.unknown_count - before)} of {cfg.sft} not in the pretrained character "
                     "vocabulary are read as <|unk|>")
    T = cfg.context
    if base is not None:
        was = int(base.extra.get("gpt_config", {}).get("block_size", T))
        if was != T:
            gentool.say(f"gpt: context {was} -> {T} tokens for chat fine-tuning (sft_block_size)")
    train_ids, train_labels = pad_to(train_ids, train_labels, T + 2, tok.pad_id)
    val_x, val_y = windows(val_ids, val_labels, T, tok.pad_id, cfg.eval_tokens)
    return LMTask(cfg, job, tok, _long(train_ids), _long(train_labels), val_x, val_y, kind="sft", base=base)


def train(job: Any) -> Any:
    """The ``gentool_train`` hook for ``gpt``: pretraining, or SFT when ``--sft`` is given."""
    cfg: GPTTrainConfig = job.config
    if job.init_from is not None and not cfg.sft:
        raise ConfigError("fine-tuning from a run (--resume RUN with a fine-tune option) needs --sft FILE")
    task = sft_task(cfg, job) if cfg.sft else pretrain_task(cfg, job)
    gentool.say(f"gpt: {task.model.num_parameters():,} parameters, {task.tokenizer.kind} tokenizer of "
                f"{task.tokenizer.vocab_size} tokens, context {task.gpt_cfg.block_size}, "
                f"{len(task.train_x):,} training tokens, {task.val_x.numel():,} held-out tokens"
                + (" (SFT)" if task.kind == "sft" else ""))
    result = gentool.fit(task, job)
    from gentool_gpt.export import export_run

    if not gentool.launched_world().is_main:  # under torchrun, one process writes the export
        return result
    try:
        folder = export_run(job.run.dir, result.best or result.last)
        if folder is not None:
            gentool.say(f"transformers export: {folder}")
    except Exception as exc:  # the export is a convenience: never lose a finished run over it
        gentool.warn(f"transformers export skipped: {exc}")
    return result


def sample(job: Any) -> Any:
    """The ``gentool_sample`` hook: ``n`` texts continuing ``--prompt`` (``job.options`` is a
    :class:`~gentool_gpt.configs.GPTSampleOptions`, checked by the core)."""
    from gentool_gpt.generate import generate
    from gentool_gpt.loading import load_gpt

    opts = job.options
    model, tok = load_gpt(job.checkpoint, job.device)
    ids = tok.encode(opts.prompt) if opts.prompt else start_ids(tok)
    if tok.unknown_count:
        gentool.warn(f"{_chars(tok.unknown_count)} of --prompt not in the model's vocabulary are read as <|unk|>")
    if len(ids) > model.block_size:
        gentool.warn(f"--prompt is {len(ids)} tokens, longer than the model's context of {model.block_size}: "
                     f"the model sees only its last {model.block_size} tokens")
    decoder = _decoder(model, opts.quantize, job.device)  # built once: its weights serve every sample
    texts = []
    for _ in range(job.n):
        out = list(generate(decoder or model, ids, max_new_tokens=opts.max_tokens, temperature=opts.temperature,
                            top_k=opts.top_k, top_p=opts.top_p, generator=job.generator, stop_ids={tok.eot_id}))
        texts.append(opts.prompt + tok.decode(out))
    return gentool.SampleResult(texts=texts)


def _decoder(model: Any, quantize: str, device: Any) -> Any:
    """The fast decoder for sampling, its weights in ``quantize`` (None: decode through the model)."""
    import torch

    from gentool_gpt.decoder import Decoder
    from gentool_gpt.quantize import available

    if quantize in ("int8", "int4") and (torch.device(device).type != "cpu" or not available(quantize)):
        raise gentool.ConfigError(f"--quantize {quantize} decodes on a CPU whose PyTorch has the kernel; "
                                  f"use none or bf16 here")
    fmt = quantize if quantize in ("int8", "int4") else "none"
    return Decoder.build(model, model.block_size, quantize=fmt,
                         dtype=torch.bfloat16 if quantize == "bf16" else torch.float32)
