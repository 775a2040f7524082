"""Tests of gentool.hub: push a real trained run, pull it back, sample from it, refuse bad repos.

Nothing here touches the internet: pushes and pulls go through ``$GENTOOL_HUB_DIR`` (the offline
stand-in for the hub), through the real huggingface_hub code with ``HF_HUB_OFFLINE=1`` and a
hand-built cache, or to a closed port on this machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gentool.checkpoint import TRAIN_PREFIX, load_checkpoint
from gentool.errors import CheckpointError, GentoolError

REPO_FILES = {"model.safetensors", "config.json", "README.md", "samples.png", "loss.png"}


def run_cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gentool", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def base_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENTOOL_", "HF_"))}
    env.update(GENTOOL_RUNS=str(root / "runs"), GENTOOL_CACHE=str(root / "cache"),
               HF_HOME=str(root / "hf_home"), HF_HUB_OFFLINE="1")
    return env


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real one-epoch run of the example VAE: runs/vae/run1 (trained once for the module)."""
    root = tmp_path_factory.mktemp("hub_train")
    proc = run_cli("train", "vae", "--epochs", "1", "-q", env=base_env(root), cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = root / "runs" / "vae" / "run1"
    assert (run_dir / "best.safetensors").is_file() and (run_dir / "last.safetensors").is_file()
    return run_dir


@pytest.fixture
def hub(tmp_path, trained, monkeypatch) -> Path:
    """Isolated runs folder (a copy of the trained run), cache and local hub for in-process calls."""
    shutil.copytree(trained, tmp_path / "runs" / "vae" / "run1")
    for key in [k for k in os.environ if k.startswith("HF_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENTOOL_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("GENTOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GENTOOL_HUB_DIR", str(tmp_path / "hub"))
    return tmp_path / "hub"


def weights(path: Path) -> dict:
    return {k: v for k, v in load_checkpoint(path).tensors().items() if not k.startswith(TRAIN_PREFIX)}


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    text = card.split("---\n")[1]
    try:
        import yaml
    except ImportError:  # the card's YAML is simple: "key: value" and "- item" lines
        doc: dict = {}
        for line in text.splitlines():
            if line.startswith("- "):
                doc[key].append(json.loads(line[2:]))
            else:
                key, _, value = line.partition(":")
                doc[key] = value.strip() or []
        return doc
    return yaml.safe_load(text)


# -- push -------------------------------------------------------------------------------------
def test_push_writes_a_self_contained_repo(hub):
    from gentool.hub import push

    run_dir = Path("runs/vae/run1").resolve()
    where = push("vae/run1", "me/vae-test")  # MODEL/RUN under the runs folder
    repo = Path(where)
    assert repo == hub / "me" / "vae-test"
    assert {p.name for p in repo.iterdir()} == REPO_FILES

    ckpt = load_checkpoint(repo / "model.safetensors", model="vae")
    assert not ckpt.has_train_state
    best = load_checkpoint(run_dir / "best.safetensors")
    assert ckpt.meta == {k: v for k, v in best.meta.items() if k != "train_state"}
    pushed, source = weights(repo / "model.safetensors"), weights(run_dir / "best.safetensors")
    assert pushed.keys() == source.keys() and pushed
    assert all((pushed[k] == source[k]).all() for k in source)

    cfg = json.loads((repo / "config.json").read_text())
    assert cfg["model"] == "vae" and cfg["family"] == "autoencoder" and cfg["plugin"] == "vae"
    assert cfg["plugin_version"] and cfg["gentool_version"]
    assert cfg["config"]["latent_dim"] == 16 and cfg["data"]["name"] == "digits"
    assert cfg["train"]["epochs"] == 1 and cfg["step"] == best.step > 0 and cfg["epoch"] == 1
    assert cfg["metrics"] == best.metrics and "train_loss" in cfg["metrics"]

    card = (repo / "README.md").read_text()
    fm = front_matter(card)
    assert fm["library_name"] == "gentool"
    assert {"gentool", "vae", "autoencoder"} <= set(fm["tags"])
    assert f"| train_loss | {best.metrics['train_loss']:.6g} |" in card
    assert "![samples of vae](samples.png)" in card
    assert "gentool pull me/vae-test" in card and "gentool sample vae --checkpoint hf://me/vae-test" in card
    assert "| batch_size | 64 |" in card and "`digits`" in card
    assert (repo / "samples.png").read_bytes() == (run_dir / "samples" / "epoch_001.png").read_bytes()
    assert (repo / "loss.png").read_bytes() == (run_dir / "loss.png").read_bytes()


def test_push_of_last_checkpoint_drops_training_state(hub):
    from gentool.hub import push

    last = Path("runs/vae/run1/last.safetensors").resolve()
    assert load_checkpoint(last).has_train_state  # the file a resume needs: optimizer, RNG, ...
    repo = Path(push(str(last), "hf://me/from-last"))  # a checkpoint file, hf:// prefix
    ckpt = load_checkpoint(repo / "model.safetensors", model="vae")
    assert not ckpt.has_train_state and "train_state" not in ckpt.meta
    assert not any(k.startswith(TRAIN_PREFIX) for k in ckpt.tensor_shapes)
    assert ckpt.meta["config"] == load_checkpoint(last).meta["config"]
    pushed, source = weights(repo / "model.safetensors"), weights(last)
    assert all((pushed[k] == source[k]).all() for k in source) and pushed.keys() == source.keys()
    assert (repo / "samples.png").exists()  # the file's folder is a run: its samples come along


def test_push_takes_newest_samples_and_eval_json(hub):
    from gentool.hub import push

    run_dir = Path("runs/vae/run1")
    samples = run_dir / "samples"
    (samples / "epoch_999.png").write_bytes(b"old grid")
    (samples / "epoch_1000.png").write_bytes(b"newest grid")  # sorts before 999 as text
    (run_dir / "eval.json").write_text(json.dumps(
        {"model": "vae", "data": "digits", "split": "test", "step": 22, "metrics": {"fid": 12.5, "nll": 30.25},
         "settings": {"features": "gentool-cnn[digits:x]"}, "warnings": ["the likelihood is withdrawn"]}))
    repo = Path(push(str(run_dir), "me/vae-eval"))  # a run folder
    assert (repo / "samples.png").read_bytes() == b"newest grid"
    card = (repo / "README.md").read_text()
    assert "| fid | 12.5 | evaluate on digits test |" in card and "| nll | 30.25 |" in card
    assert "| features | gentool-cnn[digits:x] | evaluate on digits test (setting) |" in card
    assert "Warning from `gentool evaluate`: the likelihood is withdrawn" in card
    assert json.loads((repo / "config.json").read_text())["evaluation"]["metrics"]["fid"] == 12.5

    # pushing again replaces the repo's files: no stale sample grid survives
    shutil.rmtree(samples)
    (run_dir / "eval.json").unlink()
    push(str(run_dir), "me/vae-eval")
    assert {p.name for p in repo.iterdir()} == REPO_FILES - {"samples.png"}
    assert "fid" not in (repo / "README.md").read_text()
    assert not [p for p in repo.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


@pytest.mark.parametrize("repo_id", ["noslash", "a/b/c", "-me/x", "me/x-", "me/a--b", "me/a b", "/x", ""])
def test_bad_repo_ids_are_refused(hub, repo_id):
    from gentool.hub import pull, push

    with pytest.raises(GentoolError, match="bad hub repository"):
        push("vae/run1", repo_id)
    with pytest.raises(GentoolError, match="bad hub repository"):
        pull(repo_id)


def test_push_of_nothing_is_a_clear_error(hub, tmp_path):
    from gentool.hub import push

    with pytest.raises(CheckpointError, match="nothing to push"):
        push("vae/run9", "me/x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no best.safetensors or last.safetensors"):
        push(str(tmp_path / "empty"), "me/x")
    assert not hub.exists()


# -- pull -------------------------------------------------------------------------------------
def test_push_pull_sample_round_trip_through_the_cli(trained, tmp_path, monkeypatch):
    from gentool.cli import main

    env = {**base_env(tmp_path), "GENTOOL_HUB_DIR": str(tmp_path / "hub")}
    monkeypatch.setenv("GENTOOL_HUB_DIR", env["GENTOOL_HUB_DIR"])
    with pytest.raises(SystemExit) as exit_:  # in-process: this process has torch loaded already
        main(["push", str(trained), "me/vae-test"])
    assert exit_.value.code in (0, None)
    assert (tmp_path / "hub" / "me" / "vae-test" / "model.safetensors").is_file()
    proc = run_cli("pull", "me/vae-test", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pulled = tmp_path / "cache" / "hub" / "me" / "vae-test" / "model.safetensors"
    assert str(pulled) in proc.stdout.replace("\n", "")
    assert load_checkpoint(pulled, model="vae").step > 0

    out = tmp_path / "out"
    proc = run_cli("sample", "vae", "--checkpoint", "hf://me/vae-test", "-n", "4", "--out", str(out),
                   env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.png" for i in range(4)] + ["grid.png"]
    # the pushed model is the run's model: same seed, same samples as from the run's best checkpoint
    ref = tmp_path / "ref"
    proc = run_cli("sample", "vae", "--checkpoint", str(trained / "best.safetensors"), "-n", "4",
                   "--out", str(ref), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (ref / "grid.png").read_bytes() == (out / "grid.png").read_bytes()


def test_pull_of_missing_repo_is_one_line_exit_1(tmp_path):
    env = {**base_env(tmp_path), "GENTOOL_HUB_DIR": str(tmp_path / "hub")}
    proc = run_cli("pull", "me/nothing-here", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "me/nothing-here" in lines[0] and "error" in lines[0]


def _hub_repo(hub: Path, repo: str, weights: bytes | None) -> Path:
    folder = hub / repo
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    if weights is not None:
        (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_pull_refuses_pickles_and_foreign_files(hub):
    from safetensors.torch import save
    import torch

    from gentool.hub import pull

    _hub_repo(hub, "evil/pickle", pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="pickle"):
        pull("evil/pickle")

    zipped = hub / "zip.pt"
    torch.save({"w": torch.zeros(2)}, zipped)
    _hub_repo(hub, "evil/torchzip", zipped.read_bytes())
    with pytest.raises(CheckpointError, match="pickle or PyTorch zip"):
        pull("evil/torchzip")

    _hub_repo(hub, "other/plain", save({"w": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="not a gentool checkpoint"):
        pull("other/plain")

    _hub_repo(hub, "other/empty", None)
    with pytest.raises(CheckpointError, match="holds no model.safetensors"):
        pull("other/empty")


def test_pull_without_huggingface_hub_says_what_to_install(hub, monkeypatch):
    from gentool.hub import pull, push

    monkeypatch.delenv("GENTOOL_HUB_DIR")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    for call in (lambda: pull("me/x"), lambda: push("vae/run1", "me/x")):
        with pytest.raises(GentoolError, match="pip install huggingface_hub"):
            call()


# -- the real huggingface_hub code, offline -------------------------------------------------------
def _hf_cache_entry(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """Lay out a cached snapshot exactly as huggingface_hub does: blobs, refs/main, symlinked snapshot."""
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


def test_pull_uses_the_huggingface_cache_offline(trained, tmp_path):
    from gentool.hub import stage

    staged = stage(str(trained), "owner/vae", tmp_path / "staged")  # what a push uploads
    files = {p.name: p.read_bytes() for p in staged.iterdir()}
    assert set(files) == REPO_FILES
    cache = tmp_path / "hf_cache"
    snapshot = _hf_cache_entry(cache, "owner/vae", files)

    env = {**base_env(tmp_path), "HF_HUB_CACHE": str(cache)}  # no GENTOOL_HUB_DIR: the real client
    script = "import sys; from gentool.hub import pull; print(pull(sys.argv[1]))"
    proc = subprocess.run([sys.executable, "-c", script, "hf://owner/vae"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == snapshot / "model.safetensors"

    out = tmp_path / "out"
    proc = run_cli("sample", "vae", "--checkpoint", "hf://owner/vae", "-n", "2", "--out", str(out),
                   env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "grid.png").is_file()

    proc = run_cli("pull", "owner/not-cached", env=env, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "not in the cache" in line and "offline" in line


def test_unreachable_hub_is_one_line(trained, tmp_path):
    # a closed port on this machine stands for a hub that cannot be reached
    env = {**base_env(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hf_cache"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE")
    proc = run_cli("pull", "owner/vae", env=env, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "could not be reached" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("push", str(trained), "owner/vae", env={**env, "HF_TOKEN": "hf_not_a_real_token"}, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "could not reach the hub" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
