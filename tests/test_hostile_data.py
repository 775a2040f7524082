"""Hostile or mistaken data (issue 13): each ends in one DataError line naming the file or folder,
never a MemoryError, an allocator failure or a model's batch-norm/reshape error."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gentool.data import ImageDataset, TextDataset, load_dataset
from gentool.errors import DataError
from gentool.testing import run_cli


def hostile_npz(path: Path, shape: tuple[int, ...] = (10**7, 10**6), data: bytes = b"\0" * 16) -> Path:
    """A .npz whose ``x.npy`` header claims ``shape`` (uint8) but holds only ``data``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    buf.write(data)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", buf.getvalue())
    return path


def image_folder(folder: Path, n: int, size: tuple[int, int] = (8, 8)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("L", size, 40 * i).save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    env = dict(os.environ)
    env["GENTOOL_RUNS"] = str(tmp_path / "runs")
    env["GENTOOL_CACHE"] = str(tmp_path / "cache")
    for key in ("GENTOOL_PLUGINS", "GENTOOL_DEBUG", "GENTOOL_MEMORY_LIMIT"):
        env.pop(key, None)
    return env


def assert_one_error_line(res, *needles: str) -> str:
    assert res.returncode == 1, (res.returncode, res.stdout[-1000:], res.stderr[-2000:])
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, res.stderr[-2000:]
    assert "this is a bug" not in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]
    # the one message may wrap on a narrow terminal: look for the words in all of stderr
    flat = " ".join(res.stderr.split())
    for needle in needles:
        assert needle in flat, (needle, res.stderr[-2000:])
    return flat


# ----------------------------------------------------------------------------- 1. .npz headers


def test_npz_header_claiming_terabytes_is_refused_before_allocating(tmp_path):
    path = hostile_npz(tmp_path / "huge.npz")
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    msg = str(info.value)
    assert str(path) in msg and "[10000000, 1000000]" in msg and "16 B" in msg, msg
    assert "\n" not in msg


def test_npz_header_claiming_more_than_it_holds_is_refused(tmp_path):
    path = hostile_npz(tmp_path / "short.npz", shape=(10, 8, 8), data=bytes(100))  # needs 640
    with pytest.raises(DataError, match=r"short\.npz.*\[10, 8, 8\].*truncated"):
        load_dataset(str(path))


def test_npz_bigger_than_memory_is_refused_with_the_numbers(tmp_path, monkeypatch):
    path = tmp_path / "big.npz"
    np.savez_compressed(path, x=np.zeros((1000, 16, 16), np.uint8))  # honest header, 256 kB of data
    monkeypatch.setenv("GENTOOL_MEMORY_LIMIT", "100k")
    with pytest.raises(DataError, match=r"big\.npz.*would need 1.5 MB; GENTOOL_MEMORY_LIMIT allows 100 kB"):
        load_dataset(str(path))
    monkeypatch.delenv("GENTOOL_MEMORY_LIMIT")
    assert len(load_dataset(str(path))) == 1000


def test_npz_that_is_not_a_zip_names_the_file(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("hello, not an archive\n")
    with pytest.raises(DataError, match=r"notes\.npz.*not a valid \.npz"):
        load_dataset(str(path))


def test_cli_train_on_hostile_npz_prints_one_line(tmp_path, cli_env):
    path = hostile_npz(tmp_path / "huge.npz")
    res = run_cli("train", "gan", "--data", str(path), "--epochs", "1", env=cli_env, cwd=tmp_path, timeout=300)
    assert_one_error_line(res, "huge.npz", "[10000000, 1000000]")


# ----------------------------------------------------------------------------- 2. image size


def test_absurd_image_size_is_refused_outright_naming_the_cap():
    with pytest.raises(DataError, match=r"image size 100000 is too large: the largest gentool accepts is 4096"):
        load_dataset("digits", image_size=100000)


def test_image_size_beyond_memory_is_refused_with_the_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("GENTOOL_MEMORY_LIMIT", "1M")
    # digits: 1,438 train images at 64 x 64 x 1, uint8 + float32 = 29 MB > 1 MB
    with pytest.raises(DataError) as info:
        load_dataset("digits", image_size=64)
    msg = str(info.value)
    assert "image size 64 would need 29 MB for 1,438 images of digits" in msg, msg
    assert "GENTOOL_MEMORY_LIMIT allows 1.0 MB" in msg, msg
    # the same for an image folder, checked from the headers before any image is decoded
    folder = image_folder(tmp_path / "pics", 3)
    with pytest.raises(DataError, match=r"image size 512 would need .* for 3 images of .*pics"):
        load_dataset(str(folder), image_size=512)
    # and for a channel conversion that triples the data
    monkeypatch.setenv("GENTOOL_MEMORY_LIMIT", "200k")
    with pytest.raises(DataError, match=r"digits would need .* for 1,438 images of 3x8x8"):
        load_dataset("digits", channels=3)
    monkeypatch.delenv("GENTOOL_MEMORY_LIMIT")
    assert load_dataset(str(folder), image_size=512).images.shape == (3, 1, 512, 512)


def test_machine_memory_is_known_or_gracefully_unknown(monkeypatch):
    from gentool.data import checks

    have = checks.machine_memory()
    assert have is None or have > 0
    monkeypatch.setattr(checks.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))
    monkeypatch.setattr(checks, "_cgroup_limit", lambda: None)
    monkeypatch.delenv("GENTOOL_MEMORY_LIMIT", raising=False)
    assert checks.machine_memory() is None
    checks.check_image_memory(10**9, 3, 4096, 4096, "anything")  # unknown memory: no refusal


def test_long_strip_is_cropped_before_resizing(tmp_path):
    """A 2 x 40,000 strip at size 64 would be a 64 x 1,280,000 intermediate; crop first instead."""
    folder = tmp_path / "strip"
    folder.mkdir()
    Image.new("L", (40_000, 2), 200).save(folder / "strip.png")
    ds = load_dataset(str(folder), image_size=64)
    assert ds.images.shape == (1, 1, 64, 64) and int(ds.images.float().mean().round()) == 200
    from gentool.data.transforms import resize_square

    out = resize_square(torch.full((1, 1, 2, 40_000), 100, dtype=torch.uint8), 64)
    assert out.shape == (1, 1, 64, 64) and int(out.float().mean().round()) == 100


def test_cli_absurd_image_size_prints_one_line(tmp_path, cli_env):
    res = run_cli("train", "gan", "--image-size", "100000", "--epochs", "1", env=cli_env, cwd=tmp_path, timeout=300)
    assert_one_error_line(res, "image size 100000", "4096")


# ----------------------------------------------------------------------------- 3. too small to train


def test_check_trainable_refuses_a_single_image(tmp_path):
    from gentool.data import check_trainable

    folder = image_folder(tmp_path / "one", 1)
    ds = load_dataset(str(folder))
    with pytest.raises(DataError) as info:
        check_trainable(ds)
    assert str(info.value) == f"{folder} holds 1 image; training needs at least 2"
    two = ImageDataset(images=torch.zeros((2, 1, 4, 4), dtype=torch.uint8), labels=None, class_names=None,
                       name="two")
    assert check_trainable(two) is two
    with pytest.raises(DataError, match=r"^two holds 2 images; training needs at least 4$"):
        check_trainable(two, minimum=4)
    with pytest.raises(DataError, match=r"^my data holds 2 images"):
        check_trainable(two, minimum=3, what="my data")
    with pytest.raises(DataError, match=r"^t\.txt holds 1 character; training needs at least 2$"):
        check_trainable(TextDataset(text="a", name="t.txt"))


def test_cli_train_on_one_image_prints_one_line(tmp_path, cli_env):
    """Needs gentool/engine.py to call gentool.data.check_trainable on the training set."""
    folder = image_folder(tmp_path / "one", 1)
    res = run_cli("train", "gan", "--data", str(folder), "--epochs", "1", env=cli_env, cwd=tmp_path, timeout=300)
    assert_one_error_line(res, "holds 1 image; training needs at least 2")
