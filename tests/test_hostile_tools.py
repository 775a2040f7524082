"""The verbs behind the tools, and the chat's diagnosis, against a hostile but realistic user (issue 30):
``gentool detect --explain`` never writes two heatmaps to one file, an empty detector flag is not the
default detector, a text model's checkpoint is no discriminator, every folder walk skips hidden files
(a file named is always tried), and a truncated gpt checkpoint is called truncated everywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gentool
from gentool.testing import invoke
from hostile_helpers import write_real_fake

TINY_GPT = ("--epochs", "1", "--set", "n_layer=1", "--set", "n_embd=32", "--set", "n_head=2", "--set", "block_size=32",
            "--set", "eval_tokens=1024", "--set", "iters_per_epoch=30", "--set", "warmup_iters=2", "--threads", "1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny detector and a tiny gpt run, a truncated copy of the gpt run (gpt/badg, its tensors cut)
    and one whose header is cut (gpt/badh); the environment that sees them."""
    from gentool import plugins

    base = tmp_path_factory.mktemp("hostile-tools")
    env = {**os.environ, "GENTOOL_RUNS": str(base / "runs"), "GENTOOL_CACHE": str(base / "cache"),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("GENTOOL_PLUGINS", None)
    if not {"gpt", "gan", "detector"} <= set(plugins.get_registry().models):
        pytest.skip("these tests need the gpt, gan and detect plugins")
    write_real_fake(base / "rf")
    for args in (("train", "detector", "--data", str(base / "rf"), "--epochs", "1", "--batch-size", "16", "--name",
                  "tiny", "-q", "--set", "width=4", "--threads", "1"),
                 ("train", "gpt", "--name", "tiny", "-q", *TINY_GPT)):
        res = invoke(*args, env=env, cwd=base)
        assert res.returncode == 0, res.stderr[-2000:]
    good = (base / "runs" / "gpt" / "tiny" / "last.safetensors").read_bytes()
    for name, size in (("badg", len(good) // 2), ("badh", 100)):
        (base / "runs" / "gpt" / name).mkdir()
        (base / "runs" / "gpt" / name / "last.safetensors").write_bytes(good[:size])
    return {"base": base, "env": env}


def _cli(runs, *args: str):
    return invoke(*args, env=runs["env"], cwd=runs["base"])


def _one_line_error(res, *words: str) -> None:
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in res.stderr, res.stderr
    for w in words:
        assert w in lines[0], res.stderr


# -- 2: --explain -------------------------------------------------------------------------------------
def test_explain_gives_files_of_one_name_a_heatmap_each(runs):
    base = runs["base"]
    photos = base / "two"
    for sub, k in (("a", 3), ("b", 5)):
        (photos / sub).mkdir(parents=True)
        Image.fromarray(np.asarray(Image.open(base / "rf" / "real" / f"{k}.png"))).save(photos / sub / "real.png")
    res = _cli(runs, "detect", str(photos), "--explain", str(base / "heat"), "--json")
    assert res.returncode == 0, res.stderr
    docs = [json.loads(line) for line in res.stdout.splitlines()]
    heatmaps = [d["heatmap"] for d in docs]
    assert len(docs) == 2 and len(set(heatmaps)) == 2 and all(Path(h).is_file() for h in heatmaps), heatmaps
    assert Path(heatmaps[0]).read_bytes() != Path(heatmaps[1]).read_bytes()


# -- 9: an empty detector flag; 7: a text model as a discriminator --------------------------------------------
@pytest.mark.parametrize("flag", ["--model", "--checkpoint", "--discriminator"])
def test_an_empty_detector_flag_is_refused_not_replaced_by_the_default(runs, flag):
    res = _cli(runs, "detect", str(runs["base"] / "rf" / "real" / "0.png"), flag, "")
    _one_line_error(res, flag, "empty")


def test_a_text_model_has_no_discriminator(runs):
    ckpt = runs["base"] / "runs" / "gpt" / "tiny" / "best.safetensors"
    res = _cli(runs, "detect", str(runs["base"] / "rf" / "real" / "0.png"), "--discriminator", str(ckpt))
    _one_line_error(res, "gpt has no discriminator")
    m = gentool.load(ckpt, device="cpu")
    with pytest.raises(gentool.ConfigError, match="gpt has no discriminator"):
        m.discriminate(__import__("torch").zeros(1, 1))


# -- 10: one rule for every folder walk -----------------------------------------------------------------------------
def _srgan_checkpoint(path: Path) -> Path:
    """An untrained srgan checkpoint: enough to see which files upscale takes."""
    from gentool_gan import srgan
    from gentool_gan.srgan_config import SRGANConfig

    from gentool.checkpoint import save_checkpoint
    from gentool.config import config_to_dict

    cfg = SRGANConfig(width=8, blocks=2, d_width=8, patch=16)
    g, d = srgan.build((3, 16, 16), cfg)
    meta = {"model": "srgan", "plugin": "gan", "config": config_to_dict(cfg), "step": 1, "epoch": 1,
            "data": {"name": "digits", "shape": [3, 16, 16], "kind": "image"}}
    return save_checkpoint(path, {"g": g, "d": d, "g_pixel": g}, meta)


def test_folder_walks_skip_hidden_files_and_named_files_are_always_tried(runs):
    base = runs["base"]
    folder = base / "walk"
    (folder / ".cache").mkdir(parents=True)
    (folder / "deep").mkdir()
    image = Image.open(base / "rf" / "real" / "1.png")
    for rel in ("seen.png", "deep/also.png", ".hidden.png", "._seen.png", ".cache/inside.png"):
        image.save(folder / rel, format="PNG")
    expected = [folder / "deep" / "also.png", folder / "seen.png"]
    assert gentool.find_files([folder], {".png"}) == expected
    from gentool_detect.imageio import collect
    from gentool_gan.upscale import find_images

    assert collect([str(folder)]) == find_images([str(folder)]) == expected
    # detect and upscale (translate picks its files as upscale does) take the same files
    res = _cli(runs, "detect", str(folder), "--json")
    assert res.returncode == 0, res.stderr
    assert [json.loads(line)["file"] for line in res.stdout.splitlines()] == [str(p) for p in expected]
    ckpt = _srgan_checkpoint(base / "sr.safetensors")
    res = _cli(runs, "upscale", str(folder), "-c", str(ckpt), "--json", "-o", str(base / "up"))
    assert res.returncode == 0, res.stderr
    assert [json.loads(line)["file"] for line in res.stdout.splitlines()] == [str(p) for p in expected]
    # a hidden file named on the command line is tried, by every verb
    hidden = folder / ".hidden.png"
    res = _cli(runs, "upscale", str(hidden), "-c", str(ckpt), "--json", "-o", str(base / "up2"))
    assert res.returncode == 0 and json.loads(res.stdout)["file"] == str(hidden), res.stderr
    res = _cli(runs, "detect", str(hidden), "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["file"] == str(hidden), res.stderr


# -- 6: a truncated gpt checkpoint, one diagnosis ---------------------------------------------------------------
@pytest.mark.parametrize("run,words", [("badg", "truncated"), ("badh", "truncated header")])
def test_a_truncated_gpt_checkpoint_is_called_truncated_everywhere(runs, run, words):
    base = runs["base"]
    file = base / "runs" / "gpt" / run / "last.safetensors"
    for ref in (f"gpt/{run}", str(file), str(file.parent), run):
        _one_line_error(_cli(runs, "chat", "--model", ref, "-m", "hi"), words)
    _one_line_error(_cli(runs, "sample", "gpt", "-c", f"gpt/{run}", "-n", "1"), words)
    mp = pytest.MonkeyPatch()
    mp.setenv("GENTOOL_RUNS", runs["env"]["GENTOOL_RUNS"])
    try:
        for ref in (f"gpt/{run}", str(file)):
            with pytest.raises(gentool.CheckpointError, match=words):
                gentool.open_chat(ref, device="cpu")
    finally:
        mp.undo()
    # a good run still opens by every name
    res = _cli(runs, "chat", "--model", "gpt/tiny", "-m", "hi", "--max-tokens", "2")
    assert res.returncode == 0, res.stderr


def test_an_empty_model_or_checkpoint_is_refused_by_every_verb(runs):
    """Not the current folder, nor the default model in disguise: one line naming the emptiness."""
    image = str(runs["base"] / "rf" / "real" / "0.png")
    for args in (("chat", "--model", "", "-m", "hi"), ("upscale", image, "-c", ""), ("sample", "gpt", "-c", "", "-n", "1"),
                 ("translate", image, "-c", "")):
        _one_line_error(_cli(runs, *args), "empty")
