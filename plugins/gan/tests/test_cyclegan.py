"""cyclegan (issue 16): unpaired translation from the layouts its users have, cycle loss falling,
exact resume, ``gentool translate`` on real files, and bad input in one line.

The domain pair here is made in the test: the embedded 8x8 digits at 16 px (A) and the same kind
of digits inverted (B), different images on each side, so the mapping is learnable in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gan_testing import gentool
from PIL import Image

from gentool_gan.cyclegan_task import ImagePool

TINY = ("--set", "width=8", "--set", "d_width=8", "--set", "res_blocks=1", "--batch-size", "8")


def make_pair(root: Path, layout: str = "junyanz", n: int = 120) -> Path:
    """Digits (A) and inverted digits (B); ``junyanz``: trainA/trainB/testA/testB, ``classes``: two
    class folders ``plain`` and ``inverted``."""
    from gentool import load_dataset

    digits = load_dataset("digits", split="train").images[:, 0].numpy()
    parts = {"junyanz": {"trainA": (0, n), "trainB": (n, 2 * n), "testA": (2 * n, 2 * n + 40), "testB": (2 * n + 40, 2 * n + 80)},
             "classes": {"plain": (0, n), "inverted": (n, 2 * n)}}[layout]
    for folder, (lo, hi) in parts.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(lo, hi):
            a = digits[i] if folder in ("trainA", "testA", "plain") else 255 - digits[i]
            Image.fromarray(a.astype(np.uint8)).resize((16, 16), Image.BILINEAR).save(root / folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    from gan_testing import make_env

    base = tmp_path_factory.mktemp("cyclegan")
    env = make_env(base / "runs", cache_dir)
    pair = make_pair(base / "pair", n=300)
    res = gentool("train", "cyclegan", "--data", str(pair), "--epochs", "3", "--name", "r", *TINY, "-q", env=env)
    assert res.returncode == 0, res.stderr
    return base, env


def _epochs(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("type") == "epoch"]


def test_cycle_loss_falls_and_translation_closes_the_gap(trained):
    base, env = trained
    epochs = _epochs(base / "runs" / "cyclegan" / "r")
    assert len(epochs) == 3
    assert epochs[-1]["train_cycle"] < 0.8 * epochs[0]["train_cycle"], epochs
    assert epochs[-1]["cycle_l1"] < epochs[0]["cycle_l1"], epochs
    res = gentool("evaluate", "cyclegan", "--json", env=env, cwd=base)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    m = doc["metrics"]
    assert m["fd_a2b"] < 0.8 * m["fd_a_vs_b"] and m["fd_b2a"] < 0.8 * m["fd_a_vs_b"], m
    assert m["cycle_l1_a"] < 0.25 and m["cycle_l1_b"] < 0.25, m
    assert "testA" in doc["settings"]["domains"] and "held out" in doc["settings"]["split"]


def test_sample_and_translate_answer_every_file(trained, tmp_path):
    base, env = trained
    res = gentool("sample", "cyclegan", "-n", "6", "-o", str(tmp_path / "s"), "--direction", "b2a", env=env, cwd=base)
    assert res.returncode == 0, res.stderr
    assert len(list((tmp_path / "s").glob("0*.png"))) == 6 and (tmp_path / "s" / "compare.png").exists()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), "RGBA").save(tmp_path / "logo.png")
    (tmp_path / "bad.png").write_bytes(b"GIF89a" + b"\0" * 10)
    res = gentool("translate", str(tmp_path / "photo.jpg"), str(tmp_path / "logo.png"), str(tmp_path / "bad.png"),
                  "-o", str(tmp_path / "t"), env=env, cwd=base)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert [line for line in res.stderr.splitlines() if line.startswith("error:")] == [
        line for line in res.stderr.splitlines() if "bad.png" in line]
    with Image.open(tmp_path / "t" / "photo_B.png") as img:
        assert img.size == (25, 16)  # the shorter side at the training size, the aspect kept
    with Image.open(tmp_path / "t" / "logo_B.png") as img:
        assert img.mode == "LA" and img.size == (16, 16)  # a grey model; the alpha kept
    assert (tmp_path / "t" / "sheet.png").exists()
    Image.fromarray(rng.integers(0, 256, (3, 5), dtype=np.uint8), "L").save(tmp_path / "tiny.png")
    res = gentool("translate", str(tmp_path / "photo.jpg"), str(tmp_path / "tiny.png"), "--native", "--json", "-o",
                  str(tmp_path / "n"), env=env, cwd=base)
    assert res.returncode == 0, res.stderr
    docs = [json.loads(line) for line in res.stdout.splitlines()]
    assert docs[0]["size"] == [70, 45]  # any size: padded to a multiple of 4, cropped back
    assert docs[1]["size"] == [5, 3]  # smaller than the generator's reach: padded to 8, cropped back


def test_translate_tool_answers_uploads_as_the_verb_does(trained, tmp_path):
    """``gentool serve``'s translate tool: for uploaded bytes, the same PNG as ``gentool translate``
    writes for the file, in either direction."""
    from gentool import list_tools

    base, env = trained
    ckpt = base / "runs" / "cyclegan" / "r" / "last.safetensors"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (20, 28), dtype=np.uint8), "L").save(tmp_path / "p.png")
    res = gentool("translate", str(tmp_path / "p.png"), "-c", str(ckpt), "--direction", "b2a", "--json",
                  "-o", str(tmp_path / "t"), env=env, cwd=base)
    assert res.returncode == 0, res.stderr
    written = Path(json.loads(res.stdout.splitlines()[0])["output"])
    answers = list_tools()["translate"]([("p.png", (tmp_path / "p.png").read_bytes())],
                                        {"checkpoint": str(ckpt), "direction": "b2a"})
    assert answers[0].error is None and answers[0].png == written.read_bytes()
    assert answers[0].fields["direction"] == "b2a" and answers[0].fields["to"] == written.stem.rsplit("_", 1)[1]


def test_cyclegan_resume_after_a_kill_is_exact(env, tmp_path):
    """Killed mid-epoch (after the checkpoint of step 6 of 10) and resumed: bit-exact, pools and the
    learning-rate decay included. (Not the epochs-1-then-more check: the decay spans the run's
    --epochs, so a run extended by --resume rightly differs from one planned that long.)"""
    from gentool.testing import assert_mid_epoch_resume_is_exact

    pair = make_pair(tmp_path / "pair", "classes", n=40)
    a, _ = assert_mid_epoch_resume_is_exact("cyclegan", "--data", str(pair), *TINY, "--set", "pool_size=5", "--set", "flip=true", "-q",
                                            env=env, runs=tmp_path / "runs", save_every=3, kill_at=6)
    assert any(k.startswith("__train__") and "pool_a" in k for k in a.tensors())  # the history pools are saved
    assert a.extra["domain_a"] == "inverted" and a.extra["domain_b"] == "plain"  # class folders, sorted


def test_layouts_and_bad_input_are_one_line(env, tmp_path):
    pair = make_pair(tmp_path / "pair", n=10)
    import shutil

    shutil.rmtree(pair / "trainB")
    res = gentool("train", "cyclegan", "--data", str(pair), "--epochs", "1", env=env)
    assert res.returncode == 1 and "has trainA/ but no trainB/" in res.stderr and len(res.stderr.splitlines()) == 1, res.stderr
    res = gentool("train", "cyclegan", "--epochs", "1", env=env)  # the digits: ten classes
    assert res.returncode == 1 and "--set domains=A,B" in res.stderr, res.stderr
    res = gentool("train", "cyclegan", "--set", "domains=3,cat", "--epochs", "1", env=env)
    assert res.returncode == 1 and "no class 'cat'" in res.stderr, res.stderr
    res = gentool("train", "cyclegan", "--set", "domains=3", env=env)
    assert res.returncode == 1 and "two different classes" in res.stderr, res.stderr
    two = make_pair(tmp_path / "two", "classes", n=10)
    res = gentool("train", "cyclegan", "--data", str(two), "--image-size", "18", "--epochs", "1", env=env)
    assert res.returncode == 1 and "divisible by 4" in res.stderr, res.stderr


def test_flip_mirrors_about_half_the_images_the_same_way_each_time(tmp_path):
    """``flip=true``: each training image comes as itself or mirrored left-right, about half of each,
    the same draw for the same (seed, epoch) and a new one for the next epoch; off, as they are."""
    from gentool import load_dataset

    from gentool_gan.cyclegan_config import CycleGANConfig
    from gentool_gan.cyclegan_task import CycleGANTask

    data = load_dataset(str(make_pair(tmp_path / "pair", "classes", n=64)), split="train")
    task = {flip: CycleGANTask(CycleGANConfig(flip=flip, width=4, d_width=4, res_blocks=0), data, 2e-4)
            for flip in (False, True)}
    for t in task.values():
        t.device = torch.device("cpu")

    def images(flip: bool, epoch: int) -> list[torch.Tensor]:
        """Domain A's images of one epoch, in the order trained."""
        return [x for a, _ in task[flip].batches(epoch, 8, 0, 1, seed=3) for x in a]

    def mirror_mask(epoch: int) -> list[bool]:
        """Which images flip=true mirrored (the order of images does not depend on flip)."""
        mask = []
        for p, m in zip(images(False, epoch), images(True, epoch), strict=True):
            assert torch.equal(p, m) or torch.equal(p.flip(-1), m)
            mask.append(not torch.equal(p, m))
        return mask

    first = mirror_mask(0)
    assert 16 <= sum(first) <= 48 and len(first) == 64, sum(first)
    assert mirror_mask(0) == first  # the same (seed, epoch): the same images mirrored
    assert mirror_mask(1) != first  # the next epoch draws anew
    sources = task[False].images_a.float().div(127.5).sub(1.0)
    assert all(any(torch.equal(x, im) for im in sources) for x in images(False, 0))  # off: as they are


def test_the_history_pool_keeps_and_swaps_images():
    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first) and len(pool.images) == 4
    out = pool.query(torch.full((64, 1, 1, 1), 9.0))
    old = (out < 9).sum().item()
    assert 0 < old <= 4  # some come from the pool (each old image at most once), the rest are new
    assert sum(float(x) == 9.0 for x in pool.images) >= old
