"""Sampling any number in bounded memory (issue 13): ``gentool sample -n 10000000`` draws and writes
in chunks, with progress, refuses up front what the disk cannot hold, and keeps what it wrote when
the disk fills anyway. ``GENTOOL_SAMPLE_CHUNK`` makes chunks small enough to test with a toy model.
"""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest

import gentool
from gentool import sampling
from gentool.errors import ConfigError, DataError, GentoolError

from conftest import gentool as gentool_cli


@pytest.fixture
def toy_model(toy_registry, workdir):
    gentool.train("toy", epochs=1, quiet=True, name="s")
    return gentool.load("toy/s", device="cpu")


def _digests(folder: Path, pattern: str = "0*.png") -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob(pattern))}


def test_chunks_plan():
    assert list(sampling.chunks(10, 16)) == [(0, 10)]  # one call: exactly as before
    assert list(sampling.chunks(1000, 300)) == [(0, 256), (256, 300), (556, 300), (856, 144)]
    assert list(sampling.chunks(20, 7)) == [(0, 7), (7, 7), (14, 6)]
    assert sum(c for _, c in sampling.chunks(10**7, 65536)) == 10**7


def test_chunk_size_bounds_memory_and_keeps_small_requests_whole(monkeypatch):
    monkeypatch.delenv(sampling.CHUNK_ENV, raising=False)
    assert sampling.chunk_size([1, 8, 8], "image") == 65536
    assert sampling.chunk_size([3, 512, 512], "image") == sampling.MIN_CHUNK
    per = 1 * 28 * 28 * 4
    assert sampling.CHUNK_BYTES / 2 < sampling.chunk_size([1, 28, 28], "image") * per <= sampling.CHUNK_BYTES
    assert sampling.chunk_size(None, "text") == sampling.TEXT_CHUNK
    monkeypatch.setenv(sampling.CHUNK_ENV, "many")
    with pytest.raises(ConfigError, match=sampling.CHUNK_ENV):
        sampling.chunk_size([1, 8, 8], "image")


def test_chunks_continue_the_seeded_generator(toy_model, workdir, monkeypatch):
    """Each chunk is one hook call told where it lies; the generator runs on (no chunk repeats
    another); the same seed and n give the same files; the first chunk is what ``sample`` draws."""
    seen = []
    real = toy_model._draw

    def spy(n, first, total, *args):
        seen.append((first, n, total))
        return real(n, first, total, *args)

    whole = toy_model.save_samples(20, workdir / "whole", seed=4)
    assert whole.chunks == 1 and whole.count == 20
    monkeypatch.setenv(sampling.CHUNK_ENV, "7")
    monkeypatch.setattr(toy_model, "_draw", spy)
    saved = toy_model.save_samples(20, workdir / "chunked", seed=4)
    assert seen == [(0, 7, 20), (7, 7, 20), (14, 6, 20)]
    assert saved.chunks == 3 and saved.count == 20 and "20 images" in saved.summary
    chunked = _digests(workdir / "chunked")
    assert len(chunked) == 20 and len(set(chunked.values())) == 20
    toy_model.save_samples(20, workdir / "again", seed=4)
    assert _digests(workdir / "again") == chunked
    toy_model.sample(7, seed=4).save(workdir / "first")
    assert _digests(workdir / "first") == {k: v for k, v in chunked.items() if int(k[:6]) < 7}
    monkeypatch.delenv(sampling.CHUNK_ENV)
    toy_model.sample(20, seed=4).save(workdir / "memory")  # one call: what an unchunked request writes
    assert _digests(workdir / "memory") == _digests(workdir / "whole")


def test_labelled_and_dataset_layouts_number_across_chunks(toy_model, workdir, monkeypatch):
    monkeypatch.setenv(sampling.CHUNK_ENV, "4")
    toy_model.save_samples(10, workdir / "lab", options={"label": "0"})
    assert sorted(p.name for p in (workdir / "lab").glob("0*.png")) == [f"{i:06d}_0.png" for i in range(10)]
    toy_model.save_samples(10, workdir / "ds", as_dataset=True)
    assert sorted(p.name for p in (workdir / "ds" / "images").iterdir()) == [f"{i:06d}.png" for i in range(10)]
    assert not (workdir / "ds" / "grid.png").exists()


def test_a_request_the_disk_cannot_hold_is_refused_after_the_probe(toy_model, workdir, monkeypatch):
    class Usage:
        free = 10_000

    monkeypatch.setenv(sampling.CHUNK_ENV, "8")
    monkeypatch.setattr(sampling.shutil, "disk_usage", lambda path: Usage)
    out = workdir / "full"
    with pytest.raises(GentoolError, match=r"100,000 samples would need about .* is free.*nothing was kept"):
        toy_model.save_samples(100_000, out)
    assert not out.exists()  # the probe's files and the folder it made are gone


def test_too_few_free_files_is_refused_before_drawing(toy_model, workdir, monkeypatch):
    class Vfs:
        f_files, f_favail = 1000, 50

    drawn = []
    monkeypatch.setenv(sampling.CHUNK_ENV, "8")
    monkeypatch.setattr(sampling.os, "statvfs", lambda path: Vfs, raising=False)
    monkeypatch.setattr(toy_model, "_draw", lambda *a: drawn.append(a))
    with pytest.raises(GentoolError, match=r"cannot write 101 files .* room for 50 more files"):
        toy_model.save_samples(100, workdir / "few")
    assert drawn == [] and not (workdir / "few").exists()


def test_a_disk_that_fills_midway_keeps_what_was_written(toy_model, workdir, monkeypatch):
    from gentool import images

    real, calls = images.save_images, []

    def flaky(imgs, folder, names=None):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(folder) / names[0]))
        return real(imgs, folder, names)

    monkeypatch.setenv(sampling.CHUNK_ENV, "5")
    monkeypatch.setattr(images, "save_images", flaky)
    with pytest.raises(GentoolError, match=r"filled up after 10 of 30 samples.*those are kept"):
        toy_model.save_samples(30, workdir / "midway")
    assert len(list((workdir / "midway").glob("0*.png"))) == 10


def test_in_memory_sampling_refuses_what_memory_cannot_hold(toy_model, monkeypatch):
    monkeypatch.setenv("GENTOOL_MEMORY_LIMIT", "1G")
    with pytest.raises(DataError, match=r"10,000,000 samples of shape .* in memory .* Model.save_samples"):
        toy_model.sample(10_000_000)


def test_the_cli_writes_in_chunks_with_progress(toy_env, workdir):
    gentool_cli("train", "toy", "--epochs", "1", "-q", env=toy_env, check=True)
    res = gentool_cli("sample", "toy", "-n", "40", "-o", "many", env={**toy_env, sampling.CHUNK_ENV: "16"},
                      check=True)
    assert "drew 40 samples in 3 chunks" in res.stderr and "40/40 samples" in res.stderr
    assert "wrote 40 images and grid.png to many" in res.stdout
    assert len(list((workdir / "many").glob("0*.png"))) == 40


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_an_unwritable_output_is_one_line(toy_model, workdir, monkeypatch, code):
    """A read-only folder or file system (which root, running these tests, cannot be shown for
    real): the error names the folder and the reason, never the catch-all."""
    import os

    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.name == "ro":
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(GentoolError, match=rf"cannot write samples to .*ro: {os.strerror(code)}") as err:
        toy_model.save_samples(5, workdir / "ro")
    assert "\n" not in str(err.value)
