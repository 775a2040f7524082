"""Load test of ``gentool serve``'s chat API: 1, 4 and 16 concurrent clients on loopback.

Trains a small gpt (a few seconds), starts ``gentool serve`` on it in a subprocess (a free
loopback port), and sends REQUESTS chat completions at each concurrency, each with its own seed
and prompt. The peer, measured in the same run: the same requests answered with no server at all,
one after the other, through ``gentool.open_chat`` in this process (what the server's worker
thread calls). Every answer the server gives, at 1, 4 and 16 clients, must equal the peer's answer
to its request: none lost (every request answered 200), none mixed up (no answer swapped between
clients, nor changed by the others' requests). Reports requests/s, completion tokens/s and
latency. Bounded: REQUESTS per level, LIMIT seconds per level.

    python benchmarks/serve_load.py [--requests 48] [--max-tokens 32] [--limit 120]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import machine


def start_server(runs: Path, env: dict[str, str], queue: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "gentool", "serve", "--runs", str(runs), "--port", "0",
                             "--device", "cpu", "--queue", str(queue)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"gentool serve did not start: {line}{proc.stdout.read()[-2000:]}")
    url = line.split("http://", 1)[1].split("/", 1)[0]
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain its output
    return proc, "http://" + url


def one(client, i: int, max_tokens: int) -> tuple[int, str, int, float]:
    t = time.perf_counter()
    r = client.chat.completions.create(model="gpt/load", max_tokens=max_tokens, temperature=1.0, seed=1000 + i,
                                       messages=[{"role": "user", "content": f"Tell tale number {i}."}])
    return i, r.choices[0].message.content, r.usage.completion_tokens, time.perf_counter() - t


def direct(run: Path, requests: int, max_tokens: int) -> dict:
    """The peer: each request answered in this process by the backend the server opens, serially."""
    import gentool

    bot = gentool.open_chat(str(run), device="cpu")
    bot.reseed(0)
    list(bot.chat_stream([{"role": "user", "content": "warm up"}], gentool.ChatSettings(max_tokens=2, seed=0)))
    answers, tokens, latencies = {}, 0, []
    start = time.perf_counter()
    for i in range(requests):
        t = time.perf_counter()
        settings = gentool.ChatSettings(temperature=1.0, max_tokens=max_tokens, seed=1000 + i)
        bot.reseed(settings.seed)
        answers[i] = "".join(bot.chat_stream([{"role": "user", "content": f"Tell tale number {i}."}], settings))
        tokens += int(bot.last_tokens)
        latencies.append(time.perf_counter() - t)
    lat = sorted(latencies)
    return {"clients": "direct", "answers": answers, "failures": [], "wall": time.perf_counter() - start,
            "tokens": tokens, "p50": statistics.median(lat), "p95": lat[min(len(lat) - 1, int(0.95 * len(lat)))]}


def level(url: str, clients: int, requests: int, max_tokens: int, limit: float) -> dict:
    import openai

    pool = [openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=limit) for _ in range(clients)]
    answers: dict[int, str] = {}
    tokens, latencies, failures = 0, [], []
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        futures = [ex.submit(one, pool[i % clients], i, max_tokens) for i in range(requests)]
        for f in futures:
            try:
                i, text, n, dt = f.result(timeout=max(1.0, limit - (time.perf_counter() - start)))
            except Exception as exc:  # a lost request: counted and shown
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            answers[i], tokens = text, tokens + n
            latencies.append(dt)
    wall = time.perf_counter() - start
    lat = sorted(latencies)
    return {"clients": clients, "answers": answers, "failures": failures, "wall": wall, "tokens": tokens,
            "p50": statistics.median(lat) if lat else float("nan"),
            "p95": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--limit", type=float, default=120, help="seconds allowed per level")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)  # as the server's worker
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GENTOOL_RUNS": f"{tmp}/runs", "GENTOOL_CACHE": f"{tmp}/cache", "HF_HUB_OFFLINE": "1"}
        train = subprocess.run([sys.executable, "-m", "gentool", "train", "gpt", "--name", "load", "--epochs", "1",
                                "--threads", "1", "-q", "--set", "n_layer=2", "--set", "n_embd=64", "--set", "n_head=4",
                                "--set", "block_size=128", "--set", "iters_per_epoch=60", "--set", "eval_tokens=2048"],
                               env=env, capture_output=True, text=True)
        if train.returncode:
            raise SystemExit(train.stderr[-2000:])
        peer = direct(Path(tmp) / "runs" / "gpt" / "load", args.requests, args.max_tokens)
        proc, url = start_server(Path(tmp) / "runs", env, queue=32)
        try:
            import openai

            warm = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=args.limit)
            one(warm, -1, 2)  # loads torch and the model: not timed
            results = [level(url, c, args.requests, args.max_tokens, args.limit) for c in (1, 4, 16)]
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    reference = peer["answers"]
    print(f"machine: {machine()}")
    print(f"gpt 2 layers x 64, {args.requests} requests per level, max_tokens {args.max_tokens}, temperature 1, "
          "one seed and prompt per request; server and clients on one machine (loopback); peer: no server, "
          "gentool.open_chat in the benchmark's process, one request after another")
    print(f"{'clients':>7} {'answered':>9} {'req/s':>7} {'tokens/s':>9} {'p50 s':>7} {'p95 s':>7} {'same as peer':>13}")
    ok = True
    for r in [peer, *results]:
        same = sum(reference.get(i) == text for i, text in r["answers"].items())
        ok &= not r["failures"] and same == args.requests
        print(f"{r['clients']:>7} {len(r['answers']):>4}/{args.requests:<4} {len(r['answers']) / r['wall']:>7.1f} "
              f"{r['tokens'] / r['wall']:>9.0f} {r['p50']:>7.3f} {r['p95']:>7.3f} {same:>8}/{args.requests}")
        for f in r["failures"][:3]:
            print(f"  lost: {f}")
    print("no request lost or mixed up" if ok else "REQUESTS LOST OR MIXED UP")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
