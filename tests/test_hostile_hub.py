"""Hostile hub repositories (issue 13): a pull never follows a link out of the repository.

A local hub folder (``$GENTOOL_HUB_DIR``) is the offline stand-in for the hub; a repository in it
may hold symbolic links. One pointing out of the repository (``config.json -> /etc/shadow``; here a
secret file of the test's own) is refused with one line naming it, nothing of it lands in the
cache, and an earlier cached copy that may hold the target's bytes goes. Links inside the
repository, and the links huggingface_hub itself puts in a snapshot (into its blob cache), work.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gentool.errors import GentoolError

SECRET = b"root:$6$not-for-the-cache$:19000:0:99999:7:::\n"


def base_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENTOOL_", "HF_"))}
    env.update(GENTOOL_RUNS=str(root / "runs"), GENTOOL_CACHE=str(root / "cache"),
               HF_HOME=str(root / "hf_home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


@pytest.fixture
def local_hub(tmp_path, monkeypatch) -> Path:
    for key in [k for k in os.environ if k.startswith("HF_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("GENTOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GENTOOL_HUB_DIR", str(tmp_path / "hub"))
    (tmp_path / "secret").write_bytes(SECRET)
    return tmp_path / "hub"


def gentool_weights(path: Path) -> Path:
    """A small valid gentool checkpoint (what a pull validates last)."""
    from gentool.checkpoint import save_checkpoint

    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"net": torch.nn.Linear(2, 2)}, {"model": "toy", "plugin": "toy", "config": {}})
    return path


def evil_repo(hub: Path, repo: str, secret: Path, link_name: str = "config.json") -> Path:
    folder = hub / repo
    gentool_weights(folder / "model.safetensors")
    (folder / "README.md").write_text("# a model\n")
    (folder / link_name).symlink_to(secret)
    return folder


def cached_bytes(cache: Path) -> list[bytes]:
    return [p.read_bytes() for p in cache.rglob("*") if p.is_file() and not p.is_symlink()] if cache.exists() else []


def test_pull_refuses_a_link_out_of_the_repository(local_hub, tmp_path):
    from gentool.hub import pull

    evil_repo(local_hub, "evil/shadow", tmp_path / "secret")
    with pytest.raises(GentoolError, match=r"config\.json.*outside the repository") as err:
        pull("evil/shadow")
    assert "\n" not in str(err.value)
    cache = tmp_path / "cache"
    assert SECRET not in cached_bytes(cache)
    assert not (cache / "hub" / "evil" / "shadow").exists()
    assert not [p for p in (cache / "hub" / "evil").iterdir()]  # no temp folder left half-installed


def test_refusal_removes_an_earlier_cached_copy_of_the_target(local_hub, tmp_path):
    """A copy pulled by a gentool that followed links may hold the target's bytes: it goes."""
    from gentool.hub import pull

    evil_repo(local_hub, "evil/shadow", tmp_path / "secret")
    stale = tmp_path / "cache" / "hub" / "evil" / "shadow"
    stale.mkdir(parents=True)
    (stale / "config.json").write_bytes(SECRET)
    with pytest.raises(GentoolError, match="config.json"):
        pull("evil/shadow")
    assert not stale.exists() and SECRET not in cached_bytes(tmp_path / "cache")


@pytest.mark.parametrize("how", ["absolute", "relative", "dangling", "loop", "weights"])
def test_every_kind_of_outward_link_is_refused(local_hub, tmp_path, how):
    from gentool.hub import pull

    folder = local_hub / "evil" / how
    gentool_weights(folder / "model.safetensors")
    link = folder / ("model.safetensors" if how == "weights" else "config.json")
    if how == "weights":  # the weights themselves are a link to someone else's file
        outside = gentool_weights(tmp_path / "elsewhere" / "model.safetensors")
        link.unlink()
        link.symlink_to(outside)
    elif how == "absolute":
        link.symlink_to(tmp_path / "secret")
    elif how == "relative":
        link.symlink_to(os.path.relpath(tmp_path / "secret", folder))
    elif how == "dangling":
        link.symlink_to(tmp_path / "nothing-here")
    else:
        link.symlink_to(folder / "config.json")
    with pytest.raises(GentoolError, match=link.name):
        pull(f"evil/{how}")
    assert not (tmp_path / "cache" / "hub" / "evil" / how).exists()


def test_a_link_inside_the_repository_is_copied_as_its_file(local_hub, tmp_path):
    from gentool.hub import pull

    folder = local_hub / "me" / "inside"
    gentool_weights(folder / "versions" / "v2.safetensors")
    (folder / "model.safetensors").symlink_to(Path("versions") / "v2.safetensors")
    (folder / "config.json").write_text("{}")
    pulled = pull("me/inside")
    assert not pulled.is_symlink() and pulled.read_bytes() == (folder / "versions" / "v2.safetensors").read_bytes()
    assert sorted(p.name for p in pulled.parent.iterdir()) == ["config.json", "model.safetensors"]


def test_a_hard_link_to_a_file_outside_is_refused(local_hub, tmp_path):
    """A hard link has no target to resolve: the file's name count gives it away (a name outside)."""
    from gentool.hub import pull

    folder = local_hub / "evil" / "hard"
    gentool_weights(folder / "model.safetensors")
    try:
        os.link(tmp_path / "secret", folder / "config.json")
    except OSError as exc:
        pytest.skip(f"this file system makes no hard links: {exc}")
    with pytest.raises(GentoolError, match=r"config\.json: a hard link") as err:
        pull("evil/hard")
    assert "\n" not in str(err.value)
    assert SECRET not in cached_bytes(tmp_path / "cache")
    assert not (tmp_path / "cache" / "hub" / "evil" / "hard").exists()


def test_hard_links_within_the_repository_are_fine(local_hub, tmp_path):
    from gentool.hub import pull

    folder = local_hub / "me" / "hardin"
    gentool_weights(folder / "versions" / "v2.safetensors")
    os.link(folder / "versions" / "v2.safetensors", folder / "model.safetensors")
    pulled = pull("me/hardin")
    assert pulled.read_bytes() == (folder / "versions" / "v2.safetensors").read_bytes()
    assert pulled.stat().st_nlink == 1  # the cache holds a copy, not another name


def test_pulled_folders_get_the_umask_permissions(local_hub, tmp_path):
    from gentool.hub import pull

    folder = local_hub / "me" / "perm"
    gentool_weights(folder / "model.safetensors")
    old = os.umask(0o022)
    try:
        pulled = pull("me/perm")
    finally:
        os.umask(old)
    assert stat.S_IMODE(pulled.parent.stat().st_mode) == 0o755  # as mkdir gives, not mkdtemp's 0700
    assert stat.S_IMODE(pulled.stat().st_mode) == 0o644
    for p in (tmp_path / "cache" / "hub", tmp_path / "cache" / "hub" / "me"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o755


def test_the_cli_says_it_in_one_line(local_hub, tmp_path):
    evil_repo(local_hub, "evil/shadow", tmp_path / "secret")
    env = {**base_env(tmp_path), "GENTOOL_HUB_DIR": str(local_hub)}
    proc = subprocess.run([sys.executable, "-m", "gentool", "pull", "evil/shadow"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.json" in lines[0] and "outside the repository" in lines[0]
    assert SECRET not in cached_bytes(tmp_path / "cache")


# -- the huggingface_hub path: its own links into the blob cache are fine, others are not ------
def hf_snapshot(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """A cached snapshot as huggingface_hub lays it out: blobs, refs/main, linked snapshot files."""
    commit = hashlib.sha1(repo.encode()).hexdigest()
    storage = cache / ("models--" + repo.replace("/", "--"))
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(commit)
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (storage / "blobs").mkdir()
    for name, data in files.items():
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def test_hf_snapshot_links_into_the_blob_cache_work_and_others_are_refused(tmp_path):
    weights = gentool_weights(tmp_path / "w" / "model.safetensors").read_bytes()
    cache = tmp_path / "hf_cache"
    good = hf_snapshot(cache, "owner/good", {"model.safetensors": weights, "config.json": b"{}"})
    bad = hf_snapshot(cache, "owner/bad", {"model.safetensors": weights})
    (tmp_path / "secret").write_bytes(SECRET)
    (bad / "config.json").symlink_to(tmp_path / "secret")
    env = {**base_env(tmp_path), "HF_HUB_CACHE": str(cache)}  # no GENTOOL_HUB_DIR: the real client
    script = "import sys; from gentool.hub import pull; print(pull(sys.argv[1]))"

    def pull(repo: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, repo], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)

    proc = pull("owner/good")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == good / "model.safetensors"

    proc = subprocess.run([sys.executable, "-m", "gentool", "pull", "owner/bad"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.json" in lines[0] and "outside the hub cache" in lines[0], proc.stderr
    assert not (bad / "config.json").is_symlink() and not (bad / "config.json").exists()  # removed from the cache
    assert (tmp_path / "secret").read_bytes() == SECRET  # the target itself is untouched
