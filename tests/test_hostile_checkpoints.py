"""Checkpoints from strangers (issue 13): malformed headers and metadata, files that are not files,
configs that describe another (huge) network, non-finite weights and weights that do not fit all
get one clear line ("error: ...", exit 1), never the catch-all "this is a bug" and never a hang.

Crafted files are plain bytes: an 8-byte little-endian header length, the JSON header, the data.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest
import torch
from torch import nn

from gentool.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from gentool.errors import CheckpointError

from conftest import gentool


def _write(path, header, data: bytes = b"") -> str:
    """A safetensors-shaped file: ``header`` (a dict, or raw JSON text) then ``data``."""
    raw = (header if isinstance(header, str) else json.dumps(header)).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return str(path)


def _meta(**over) -> dict:
    doc = {"model": "toy", "plugin": "toy", "config": {"width": 3}, "step": 7, "epoch": 2,
           "data": {"name": "digits", "shape": [1, 8, 8]}, "metrics": {}}
    doc.update(over)
    return doc


def _header(meta=None, tensors=None, *, gentool_json: str | None = None) -> dict:
    """A header with one F32 tensor ``g.w`` of shape [2] (8 bytes) unless ``tensors`` is given."""
    text = gentool_json if gentool_json is not None else json.dumps(_meta() if meta is None else meta)
    header = {"__metadata__": {"format": FORMAT, "gentool": text}}
    header.update(tensors if tensors is not None else {"g.w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})
    return header


DEEP = "[" * 100_000 + "]" * 100_000

MALFORMED = {
    "tensor without shape": (_header(tensors={"g.w": {"dtype": "F32", "data_offsets": [0, 8]}}), "has no shape"),
    "tensor without dtype": (_header(tensors={"g.w": {"shape": [2], "data_offsets": [0, 8]}}), "has no dtype"),
    "offsets as strings": (_header(tensors={"g.w": {"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}}),
                           "data_offsets"),
    "shape of strings": (_header(tensors={"g.w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}}), "shape"),
    "shape against size": (_header(tensors={"g.w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}),
                           "needs 12 bytes"),
    "entry not an object": (_header(tensors={"g.w": [1, 2]}), "not a JSON object"),
    "__metadata__ a list": ({"__metadata__": ["format", FORMAT], "g.w": {"dtype": "F32", "shape": [2],
                                                                       "data_offsets": [0, 8]}}, "__metadata__"),
    "__metadata__ value not a string": ({"__metadata__": {"format": FORMAT, "gentool": {"model": "toy"}}},
                                        "not a string"),
    "gentool metadata a list": (_header(gentool_json="[1, 2]"), "corrupt gentool metadata"),
    "gentool metadata a string": (_header(gentool_json='"toy"'), "corrupt gentool metadata"),
    "model not a string": (_header(_meta(model=["toy"])), "model name"),
    "step as a word": (_header(_meta(step="ten")), "step 'ten'"),
    "epoch negative": (_header(_meta(epoch=-1)), "epoch"),
    "config a list": (_header(_meta(config=[1, 2])), "config is a list"),
    "config a string": (_header(_meta(config="width=3")), "config is a str"),
    "data a list": (_header(_meta(data=[1, 8, 8])), "data is a list"),
    "data a string": (_header(_meta(data="digits")), "data is a str"),
    "metrics a list": (_header(_meta(metrics=[1.0])), "metrics is a list"),
    "parameters not counts": (_header(_meta(parameters={"g": "many"})), "parameter count"),
    "data shape not sizes": (_header(_meta(data={"shape": "1x8x8"})), "data shape"),
    "header nested 100,000 deep": ('{"__metadata__": {"format": "%s"}, "x": %s}' % (FORMAT, DEEP), "nested too deeply"),
    "metadata nested 100,000 deep": (_header(gentool_json=DEEP), "nested too deeply"),
    "metadata nested 500 deep": (_header(_meta(config={"width": json.loads("[" * 500 + "]" * 500)})), "nested"),
    "huge integer": (_header(gentool_json='{"model": "toy", "step": ' + "9" * 5000 + "}"), "corrupt gentool metadata"),
}


def _one_line_error(res, expect: str) -> None:
    out = (res.output if hasattr(res, "output") else res.stdout + res.stderr).strip()
    code = res.exit_code if hasattr(res, "exit_code") else res.returncode
    assert code == 1, out[-2000:]
    assert "this is a bug" not in out and "Traceback" not in out, out[-2000:]
    assert out.startswith("error:") and len(out.splitlines()) == 1, out[-2000:]
    assert expect in out, out[-2000:]


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_header_or_metadata_gives_one_line(tmp_path, case):
    header, expect = MALFORMED[case]
    path = _write(tmp_path / "bad.safetensors", header, b"\0" * 8)
    with pytest.raises(CheckpointError, match="corrupt|not a safetensors|nested") as info:
        load_checkpoint(path)
    assert expect in str(info.value) and "\n" not in str(info.value)
    from typer.testing import CliRunner

    from gentool.cli import app

    for args in (["info", path], ["info", path, "--json"]):
        _one_line_error(CliRunner().invoke(app, args), expect)


def test_malformed_metadata_through_the_real_cli(workdir):
    """The same, in a fresh interpreter: a few of the cases above, as a user's shell runs them."""
    for i, case in enumerate(["step as a word", "config a list", "gentool metadata a list",
                              "metadata nested 100,000 deep"]):
        header, expect = MALFORMED[case]
        path = _write(workdir / f"bad{i}.safetensors", header, b"\0" * 8)
        _one_line_error(gentool("info", path, timeout=120), expect)


def test_fifo_device_and_folder_are_refused_before_opening(workdir):
    fifo = workdir / "pipe.safetensors"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    try:
        res = gentool("info", str(fifo), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("gentool info blocked on a FIFO")
    _one_line_error(res, "is a FIFO")
    if os.path.exists("/dev/zero"):
        _one_line_error(gentool("info", "/dev/zero", timeout=60), "is a character device")
    (workdir / "folder.safetensors").mkdir()
    _one_line_error(gentool("info", str(workdir / "folder.safetensors"), timeout=60), "is a folder")
    with pytest.raises(CheckpointError, match="FIFO"):
        load_checkpoint(fifo)


# -- networks: configs that lie, weights that are NaN or do not fit ---------------------------------
def _gan_checkpoint(path, *, config=None, weights=None):
    """A real (untrained) ``gan`` checkpoint for 1x8x8 images; ``config`` overrides what the metadata
    says (not the weights), ``weights`` maps g_ema tensors to replacements."""
    pytest.importorskip("gentool_gan")
    from gentool.config import config_to_dict
    from gentool_gan.task import CONFIGS, make_networks

    cfg = CONFIGS["gan"]()
    torch.manual_seed(0)
    g, d = make_networks("gan", (1, 8, 8), None, cfg)
    ema = make_networks("gan", (1, 8, 8), None, cfg)[0]
    for key, value in (weights or {}).items():
        with torch.no_grad():
            ema.state_dict()[key].copy_(value(ema.state_dict()[key]))
    meta = {"model": "gan", "plugin": "gan", "config": {**config_to_dict(cfg), **(config or {})},
            "data": {"name": "digits", "shape": [1, 8, 8], "kind": "image"}, "step": 1, "epoch": 1}
    return save_checkpoint(path, {"g": g, "d": d, "g_ema": ema}, meta)


def _sample_capped(path, out, memory_gb: int = 8) -> subprocess.CompletedProcess:
    """``gentool sample gan --checkpoint PATH`` in a fresh interpreter whose address space is capped
    (so the old behaviour, a 40 GB allocation, fails fast instead of swamping the machine)."""
    code = ("import resource, runpy, sys; lim = %d << 30; resource.setrlimit(resource.RLIMIT_AS, (lim, lim)); "
            "sys.argv = ['gentool'] + sys.argv[1:]; runpy.run_module('gentool', run_name='__main__')" % memory_gb)
    return subprocess.run([sys.executable, "-c", code, "sample", "gan", "--checkpoint", str(path), "-n", "2",
                           "--out", str(out), "--device", "cpu"], capture_output=True, text=True, timeout=300)


def test_config_describing_a_huge_network_is_refused_before_building(workdir):
    path = _gan_checkpoint(workdir / "huge.safetensors", config={"g_hidden": [100000, 100000]})
    res = _sample_capped(path, workdir / "s")
    _one_line_error(res, "does not fit this model's 'g_ema' network (as its metadata describes it)")
    assert "in the file but [100000," in res.stderr and not (workdir / "s").exists()


def test_config_describing_a_huge_buffer_is_refused():
    """A network whose weights match but whose metadata asks for a huge non-persistent buffer."""

    class Net(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.register_buffer("table", torch.zeros(n, 1024), persistent=False)

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "a.safetensors", {"net": Net(4)}, _meta())
        ckpt = load_checkpoint(path)
        assert ckpt.build(lambda: {"net": Net(4)})["net"].lin.weight.shape == (2, 2)
        with pytest.raises(CheckpointError, match="GB beyond the weights it stores"):
            ckpt.build(lambda: {"net": Net(10**9)})


def test_config_describing_millions_of_modules_is_refused_quickly(tmp_path):
    path = save_checkpoint(tmp_path / "a.safetensors", {"net": nn.Linear(2, 2)}, _meta())
    ckpt = load_checkpoint(path)
    with pytest.raises(CheckpointError, match="far more tensors"):
        ckpt.build(lambda: {"net": nn.Sequential(*[nn.Linear(2, 2) for _ in range(10**7)])})
    with pytest.raises(CheckpointError, match="cannot build the network its metadata describes"):
        ckpt.build(lambda: {"net": nn.Linear(-3, 2)})


def test_nan_weights_are_refused_not_sampled(workdir):
    path = _gan_checkpoint(workdir / "nan.safetensors", weights={"net.0.weight": lambda w: torch.full_like(w, float("nan"))})
    res = _sample_capped(path, workdir / "s")
    _one_line_error(res, "holds non-finite weights: g_ema.net.0.weight contains NaN")
    assert not (workdir / "s").exists()


def test_infinite_weights_are_refused_in_process(tmp_path):
    net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    with torch.no_grad():
        net[1].bias[0] = float("inf")
    path = save_checkpoint(tmp_path / "a.safetensors", {"g": net}, _meta())
    with pytest.raises(CheckpointError, match=r"non-finite weights: g\.1\.bias contains infinity"):
        load_checkpoint(path).load_into({"g": nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))})
    load_checkpoint(path).load_into({"g": nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))}, finite=False)


def test_weights_that_do_not_fit_name_the_first_difference(tmp_path):
    net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    path = save_checkpoint(tmp_path / "a.safetensors", {"g_ema": net}, _meta())
    other = nn.Sequential(nn.Linear(4, 6), nn.Linear(8, 2), nn.Linear(2, 2))
    other.extra = nn.Linear(1, 1)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path).load_into({"g_ema": other})
    msg = str(info.value)
    assert "\n" not in msg and not msg.rstrip().endswith(":"), msg
    assert "does not fit this model's 'g_ema' network: " in msg
    assert "missing '2.weight' (and 3 more)" in msg
    assert "'0.weight' is [8, 4] in the file but [6, 4] in the network" in msg
    del other.extra, other[2]  # only a shape mismatch is left
    with pytest.raises(CheckpointError, match=r"'0\.weight' is \[8, 4\] in the file but \[6, 4\]"):
        load_checkpoint(path).load_into({"g_ema": other})
    with pytest.raises(CheckpointError, match=r"unexpected '1\.(weight|bias)' \(and 1 more\)"):
        load_checkpoint(path).load_into({"g_ema": nn.Sequential(nn.Linear(4, 8))})


def test_a_wrong_z_dim_through_the_cli_names_both_shapes(workdir):
    path = _gan_checkpoint(workdir / "z.safetensors", config={"z_dim": 5})
    res = _sample_capped(path, workdir / "s")
    _one_line_error(res, "in the file but [")
    assert "does not fit this model's 'g_ema' network" in res.stderr


def test_good_gan_checkpoint_still_samples(workdir):
    path = _gan_checkpoint(workdir / "ok.safetensors")
    res = _sample_capped(path, workdir / "s")
    assert res.returncode == 0, res.stderr[-2000:]
    assert any((workdir / "s").glob("*.png"))


# -- training state: a resume from a file whose weights load but whose state does not ---------------
def _rewrite_train_state(path, change) -> None:
    """Rewrite ``path`` with ``change(train_state_document)`` as its training state (weights kept)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    doc = json.loads(meta["gentool"])
    doc["train_state"] = change(doc["train_state"])
    save_file(tensors, str(path), metadata={**meta, "gentool": json.dumps(doc)})


def _state(doc: dict) -> dict:
    return doc["__dict__"]


def _missing_tensor(doc):
    _state(doc)["position"]["__dict__"]["step"] = {"__tensor__": "/no/such/tensor"}
    return doc


def _step_as_word(doc):
    _state(doc)["position"]["__dict__"]["step"] = "ten"
    return doc


def _negative_batch(doc):
    _state(doc)["position"]["__dict__"]["batch"] = -4
    return doc


def _python_rng_garbage(doc):
    _state(doc)["rng"]["__dict__"]["python"] = {"__tuple__": [3, [1, 2], None]}
    return doc


def _optimizer_without_groups(doc):
    for opt in _state(doc)["optimizers"]["__dict__"].values():
        opt["__dict__"].pop("param_groups")
    return doc


def _optimizer_state_for_other_params(doc):
    for opt in _state(doc)["optimizers"]["__dict__"].values():
        for group in opt["__dict__"]["param_groups"]:
            group["__dict__"]["params"] = [0]
    return doc


DAMAGED_STATE = {
    "state a number": (lambda doc: 5, "not a table"),
    "state a bare table": (lambda doc: {"optimizers": {}}, "unknown form"),
    "__dict__ a list": (lambda doc: {"__dict__": [1, 2]}, "a table was expected"),
    "tensor the file lacks": (_missing_tensor, "does not hold"),
    "step as a word": (_step_as_word, "ten"),
    "negative batch": (_negative_batch, "negative position"),
    "python random state garbage": (_python_rng_garbage, "damaged"),
    "optimizer without param_groups": (_optimizer_without_groups, "damaged"),
    "optimizer state for other parameters": (_optimizer_state_for_other_params, "damaged"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_STATE))
def test_damaged_training_state_is_refused_on_resume(toy_registry, workdir, case):
    """``resume`` of a run whose ``last.safetensors`` has weights that load but a training state
    that does not (a file a tool rewrote, or a stranger's): a CheckpointError naming the file."""
    import gentool

    run = gentool.train("toy", epochs=1, quiet=True, name="r")
    change, expect = DAMAGED_STATE[case]
    _rewrite_train_state(run.last, change)
    with pytest.raises(CheckpointError, match="training state is damaged") as info:
        gentool.train("toy", epochs=2, resume="r", quiet=True)
    assert expect in str(info.value) and "last.safetensors" in str(info.value)


def test_damaged_training_state_through_the_real_cli(toy_env, workdir):
    """The same, as a user's shell sees it: one line, exit 1, never the catch-all."""
    gentool("train", "toy", "--epochs", "1", "--name", "r", "-q", env=toy_env, check=True)
    _rewrite_train_state(workdir / "runs" / "toy" / "r" / "last.safetensors", _missing_tensor)
    res = gentool("train", "toy", "--epochs", "2", "--resume", "r", "-q", env=toy_env, timeout=120)
    _one_line_error(res, "training state is damaged")
