"""Pretraining, sampling and resuming ``gpt`` through the real command line."""

from __future__ import annotations

import json
import math

from gpt_helpers import TINY, gentool

from gentool.checkpoint import load_checkpoint
from gentool.testing import assert_resume_is_exact


def epochs_of(run) -> list[dict]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["type"] == "epoch"]


def test_registration_of_the_model_and_the_corpus():
    from gentool_gpt import plugin

    specs, sets = [], []
    plugin.gentool_register_models(specs.append)
    plugin.gentool_register_datasets(sets.append)
    assert [s.name for s in specs] == ["gpt"] and specs[0].modality == "text" and "sft" in specs[0].finetune_options
    assert "sft_block_size" in specs[0].finetune_options
    assert [d.name for d in sets] == ["tales"] and sets[0].kind == "text"
    assert len(sets[0].loader(split="train").text) > 200_000  # the embedded corpus, no download


def test_pretrain_on_default_data_loss_falls_then_sample(env, tmp_path):
    res = gentool("train", "gpt", "--epochs", "2", "--set", "iters_per_epoch=25", *TINY, "-q", env=env)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs/gpt/run1"
    ep = epochs_of(run)
    ckpt = load_checkpoint(run / "best.safetensors")
    vocab = ckpt.extra["gpt_config"]["vocab_size"]
    assert ep[1]["val_loss"] < ep[0]["val_loss"] < math.log(vocab)  # below a uniform guess, and falling
    assert ckpt.data["name"] == "tales" and ckpt.extra["kind"] == "pretrain"
    assert (run / "samples/epoch_002.txt").read_text().strip()
    assert (run / "hf/model.safetensors").exists() and (run / "hf/tokenizer.json").exists()
    res = gentool("sample", "gpt", "-n", "2", "--prompt", "The fox", "--max-tokens", "40", "--seed", "3",
                  "--out", "s", env=env)
    assert res.returncode == 0, res.stderr
    texts = (tmp_path / "s/samples.txt").read_text().split("\n\n----\n\n")
    assert len(texts) == 2 and all(t.startswith("The fox") and len(t) > len("The fox") for t in texts)
    again = gentool("sample", "gpt", "-n", "2", "--prompt", "The fox", "--max-tokens", "40", "--seed", "3",
                    "--out", "s2", env=env)
    assert (tmp_path / "s2/samples.txt").read_text() == (tmp_path / "s/samples.txt").read_text()  # seeded
    bad = gentool("sample", "gpt", "--temprature", "1", env=env)
    assert bad.returncode != 0 and "--temperature" in (bad.stderr + bad.stdout)
    for flag, value in (("--top-p", "2"), ("--top-k", "0")):  # refused, not silently ignored
        bad = gentool("sample", "gpt", flag, value, "--max-tokens", "5", env=env)
        assert bad.returncode != 0 and flag in bad.stderr + bad.stdout and "Traceback" not in bad.stderr


def test_resume_is_exact_and_bpe_trains(env, tmp_path):
    args = ["--set", "iters_per_epoch=8", "--set", "tokenizer=bpe", "--set", "vocab_size=400", *TINY, "-q"]
    a, b = assert_resume_is_exact("gpt", *args, env=env, runs=tmp_path / "runs")
    assert a.extra["tokenizer"] == b.extra["tokenizer"] and json.loads(a.extra["tokenizer"])["kind"] == "bpe"
