"""A plain PyTorch re-creation of nanoGPT's CPU configuration, the peer of ``gentool train gpt``.

GPT-2 style (learned positions, LayerNorm without bias, GELU MLP of 4x width, tied embedding),
4 layers, 4 heads, width 128, context 64, batch 12, 2,000 iterations, AdamW (0.9, 0.99), weight
decay 0.1 on matrices, lr 1e-3 with 100 warmup steps and cosine decay to 1e-4 at 2,000, gradient
clipping 1.0, no dropout, float32, character-level tinyshakespeare with the 90/10 split. Written
for this benchmark from the published description of that configuration (no code copied).

``python benchmarks/nanogpt_baseline.py [--iters N]`` trains and prints the wall time and the
validation loss over every non-overlapping 64-character window of the held-out 10 %.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "text" / "tinyshakespeare.txt"


class Block(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d, bias=False)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.ln2 = nn.LayerNorm(d, bias=False)
        self.fc = nn.Linear(d, 4 * d, bias=False)
        self.out = nn.Linear(4 * d, d, bias=False)
        self.n_head = n_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class BaselineGPT(nn.Module):
    def __init__(self, vocab: int, block: int = 64, d: int = 128, n_layer: int = 4, n_head: int = 4):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(block, d)
        self.blocks = nn.ModuleList(Block(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d, bias=False)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


def load_splits(path: Path = DATA) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Character ids of the first 90 % and the last 10 % of the file, and the vocabulary size."""
    text = path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    cut = int(len(text) * 0.9)
    return ids[:cut], ids[cut:], len(chars)


@torch.no_grad()
def full_val_loss(model: nn.Module, val: torch.Tensor, block: int = 64) -> float:
    """Mean loss over every non-overlapping window of the held-out text (the shared estimate)."""
    model.eval()
    n = (len(val) - 1) // block
    x, y = val[: n * block].view(n, block), val[1: n * block + 1].view(n, block)
    total = 0.0
    for i in range(0, n, 256):
        logits = model(x[i:i + 256])
        total += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), y[i:i + 256].reshape(-1), reduction="sum"))
    return total / y.numel()


def train(iters: int = 2000, seed: int = 0, threads: int = 2) -> dict:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    train_ids, val_ids, vocab = load_splits()
    model = BaselineGPT(vocab)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    warmup, lr_max, lr_min = 100, 1e-3, 1e-4

    def lr_at(it: int) -> float:
        if it < warmup:
            return lr_max * (it + 1) / (warmup + 1)
        ratio = min(1.0, (it - warmup) / (iters - warmup))
        return lr_min + 0.5 * (1 + math.cos(math.pi * ratio)) * (lr_max - lr_min)

    offsets = torch.arange(65)
    t0 = time.perf_counter()
    model.train()
    for it in range(iters):
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        starts = torch.randint(len(train_ids) - 65, (12,))
        chunk = train_ids[starts[:, None] + offsets[None, :]]
        logits = model(chunk[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab), chunk[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    seconds = time.perf_counter() - t0
    return {"iters": iters, "train_seconds": seconds, "tokens_per_s": iters * 12 * 64 / seconds,
            "val_loss": full_val_loss(model, val_ids), "parameters": sum(p.numel() for p in model.parameters())}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not DATA.exists():
        raise SystemExit(f"skipped: {DATA} not found (the shared data folder is absent)")
    print(json.dumps(train(args.iters, args.seed, args.threads)))
