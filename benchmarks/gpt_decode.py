"""Decoding speed: gentool's KV-cache ``generate`` against transformers' ``model.generate``, same model.

    flock /tmp/gentool-bench.lock python benchmarks/gpt_decode.py [--new-tokens 200] [--prompt 16]
        [--repeats 5] [--threads 1] [--checkpoint runs/gpt/RUN/best.safetensors] [--json]

The model: gentool's ``GPT`` of about 0.8M parameters (vocab 65, width 128, 4 layers, 4 heads,
SwiGLU 352, tied embeddings: nanoGPT's CPU configuration in the Llama layout), randomly
initialised with N(0, 0.3) weights so that greedy decoding does not repeat one token; the
transformers side is its export (``gentool_gpt.export``) loaded by ``AutoModelForCausalLM`` as a
LlamaForCausalLM. With ``--checkpoint`` a trained gentool ``gpt`` checkpoint is used instead.

Before timing, the two must agree: the same logits on a random sequence and the same greedy
tokens. Then each side decodes ``--new-tokens`` tokens after the same ``--prompt``-token prompt,
greedy and sampled (temperature 0.8, top-k 50), CPU float32, ``--threads`` torch threads for
both, interleaved, ``--repeats`` times; reported: tokens per second (prefill included) as the
median of the repeats, and the ratio. CPU figures, from the machine that runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import string
import tempfile
import time
from pathlib import Path

import torch


def build_pair(block: int, checkpoint: str | None):
    """(our GPT, transformers' LlamaForCausalLM) holding the same weights, both in eval mode.

    The transformers side is loaded from our model's export (gentool_gpt.export.export_hf), the
    folder ``gentool train gpt`` writes to ``RUN/hf``."""
    from transformers import AutoModelForCausalLM

    from gentool_gpt.export import export_hf
    from gentool_gpt.model import GPT, GPTConfig
    from gentool_gpt.tokenizer import Tokenizer

    if checkpoint:
        from gentool.checkpoint import load_checkpoint

        from gentool_gpt.loading import load_gpt

        ours, tok = load_gpt(load_checkpoint(checkpoint, model="gpt"), "cpu")
    else:
        tok = Tokenizer.train_char(string.ascii_letters[:52] + " .,!?\n")  # 58 characters + 7 specials = 65
        torch.manual_seed(0)
        ours = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=4, n_head=4, n_embd=128, block_size=block,
                             mlp_hidden=352))
        with torch.no_grad():
            for p in ours.parameters():
                if p.dim() > 1:
                    p.normal_(0.0, 0.3)
    folder = export_hf(ours, tok, Path(tempfile.mkdtemp()) / "hf")
    theirs = AutoModelForCausalLM.from_pretrained(folder).eval()
    theirs.generation_config.eos_token_id = None  # time exactly --new-tokens tokens on both sides
    return ours.eval(), theirs


def hf_generate(model, prompt: torch.Tensor, n: int, sample: bool, seed: int) -> list[int]:
    torch.manual_seed(seed)
    kw = dict(do_sample=True, temperature=0.8, top_k=50, top_p=None) if sample else dict(do_sample=False)
    with torch.inference_mode():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                             pad_token_id=0, **kw)
    return out[0, prompt.shape[1]:].tolist()


def our_generate(model, prompt: list[int], n: int, sample: bool, seed: int) -> list[int]:
    from gentool_gpt.generate import generate

    g = torch.Generator().manual_seed(seed)
    kw = dict(temperature=0.8, top_k=50) if sample else dict(temperature=0.0)
    return list(generate(model, prompt, max_new_tokens=n, generator=g, **kw))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--prompt", type=int, default=16, help="prompt length in tokens")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both (1 is fastest for tiny models)")
    ap.add_argument("--checkpoint", default=None, help="a trained gentool gpt checkpoint instead of the random model")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    block = max(256, args.prompt + args.new_tokens)
    ours, theirs = build_pair(block, args.checkpoint)
    if args.prompt + args.new_tokens > ours.block_size:
        raise SystemExit(f"prompt + new tokens ({args.prompt + args.new_tokens}) exceed the model's context "
                         f"({ours.block_size}): the two would handle the overflow differently")
    vocab = ours.cfg.vocab_size
    n_params = sum(p.numel() for p in ours.parameters())
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(3, vocab, (1, args.prompt), generator=g)

    # 1) the same model: logits and greedy tokens
    with torch.no_grad():
        seq = torch.randint(0, vocab, (1, 48), generator=g)
        diff = (ours(seq) - theirs(seq).logits).abs().max().item()
    greedy_ours = our_generate(ours, prompt[0].tolist(), args.new_tokens, False, 0)
    greedy_theirs = hf_generate(theirs, prompt, args.new_tokens, False, 0)
    same = sum(a == b for a, b in zip(greedy_ours, greedy_theirs))
    first_diff = next((i for i, (a, b) in enumerate(zip(greedy_ours, greedy_theirs)) if a != b), None)
    if first_diff is not None and first_diff < 20:
        raise SystemExit(f"greedy tokens differ at position {first_diff}: not the same model (max logit diff {diff:.2e})")

    # 2) timing, interleaved
    results = {}
    for mode in ("greedy", "sampled"):
        sample = mode == "sampled"
        our_generate(ours, prompt[0].tolist(), 20, sample, 0)  # warm-up
        hf_generate(theirs, prompt, 20, sample, 0)
        times = {"gentool": [], "transformers": []}
        for r in range(args.repeats):
            t = time.perf_counter()
            n1 = len(our_generate(ours, prompt[0].tolist(), args.new_tokens, sample, r))
            times["gentool"].append(n1 / (time.perf_counter() - t))
            t = time.perf_counter()
            n2 = len(hf_generate(theirs, prompt, args.new_tokens, sample, r))
            times["transformers"].append(n2 / (time.perf_counter() - t))
            assert n1 == n2 == args.new_tokens, (n1, n2)
        med = {k: statistics.median(v) for k, v in times.items()}
        results[mode] = {"gentool_tok_s": med["gentool"], "transformers_tok_s": med["transformers"],
                         "ratio": med["gentool"] / med["transformers"],
                         "all": {k: [round(x, 1) for x in v] for k, v in times.items()}}

    doc = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0],
                    "torch": torch.__version__, "transformers": transformers.__version__, "device": "cpu, float32"},
        "model": {"parameters": n_params, "vocab": vocab, "block_size": ours.block_size,
                  "source": args.checkpoint or "random gentool GPT; transformers loads its Llama export"},
        "check": {"max_logit_diff": diff, "greedy_tokens_equal": f"{same}/{args.new_tokens}",
                  "first_difference": first_diff},
        "settings": {"prompt_tokens": args.prompt, "new_tokens": args.new_tokens, "repeats": args.repeats,
                     "sampled": "temperature 0.8, top-k 50"},
        "results": results,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    m = doc["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s), load {m['load_avg_1m']:.2f}, "
          f"torch {m['torch']}, transformers {m['transformers']}, CPU float32")
    print(f"model: {n_params:,} parameters ({doc['model']['source']}); max logit difference {diff:.2e}; "
          f"greedy tokens equal {same}/{args.new_tokens}")
    print(f"{args.prompt}-token prompt, {args.new_tokens} new tokens, median of {args.repeats}:")
    for mode, r in results.items():
        print(f"  {mode:8s} gentool {r['gentool_tok_s']:8.0f} tok/s   transformers {r['transformers_tok_s']:8.0f} tok/s"
              f"   ratio {r['ratio']:.2f}x")


if __name__ == "__main__":
    main()
