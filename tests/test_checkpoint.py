"""Checkpoints: round trip, self-description, atomic writes, and refusal of anything else."""

from __future__ import annotations

import json
import os
import pickle
import struct

import pytest
import torch
from torch import nn

from gentool.checkpoint import (
    FORMAT, load_checkpoint, pack_state, read_header, save_checkpoint, unpack_state, write_atomic,
)
from gentool.errors import CheckpointError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))


def _meta() -> dict:
    return {"model": "toy", "plugin": "toy", "config": {"width": 3}, "step": 7, "epoch": 2,
            "data": {"name": "digits", "shape": [1, 8, 8], "class_names": ["0", "1"]}, "metrics": {"fd": 1.5}}


def test_round_trip_weights_and_metadata(tmp_path):
    net = _net()
    path = save_checkpoint(tmp_path / "a.safetensors", {"g": net}, _meta())
    ckpt = load_checkpoint(path, model="toy")
    assert (ckpt.model, ckpt.step, ckpt.epoch, ckpt.config, ckpt.metrics) == ("toy", 7, 2, {"width": 3}, {"fd": 1.5})
    assert ckpt.data["class_names"] == ["0", "1"] and ckpt.meta["gentool_version"]
    fresh = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    ckpt.load_into({"g": fresh})
    for (k, a), (_, b) in zip(net.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k
    assert ckpt.parameter_counts() == {"g": sum(p.numel() for p in net.parameters())}
    assert not ckpt.has_train_state


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "a.safetensors", {"g": _net()}, _meta())
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(path).load_into({"g": nn.Linear(4, 8)})
    with pytest.raises(CheckpointError, match="no weights for module 'd'"):
        load_checkpoint(path).load_into({"d": nn.Linear(4, 8)})


def test_optimizer_and_rng_state_survive_exactly(tmp_path):
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.8, 0.95))
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 4)).sum().backward()
        opt.step()
    import random

    state = {"opt": opt.state_dict(), "py": random.getstate(), "torch": torch.get_rng_state(), "none": None}
    tensors, doc = pack_state(state)
    path = save_checkpoint(tmp_path / "s.safetensors", {"g": net}, _meta(), train_state=(tensors, doc))
    ckpt = load_checkpoint(path)
    assert ckpt.has_train_state
    loaded = {k[len("__train__/"):]: v for k, v in ckpt.tensors().items() if k.startswith("__train__/")}
    back = unpack_state(ckpt.meta["train_state"], loaded)
    assert back["py"] == state["py"] and back["none"] is None
    assert torch.equal(back["torch"], state["torch"])
    assert back["opt"]["param_groups"] == state["opt"]["param_groups"]
    for i, s in state["opt"]["state"].items():
        for k, v in s.items():
            assert torch.equal(back["opt"]["state"][i][k], v)
    opt2 = torch.optim.Adam(net.parameters(), lr=0.5)
    opt2.load_state_dict(back["opt"])  # the restored dict is one the optimizer accepts
    assert opt2.param_groups[0]["betas"] == (0.8, 0.95)


def test_refuses_pickles_and_foreign_files(tmp_path):
    net = _net()
    pt = tmp_path / "model.safetensors"
    torch.save(net.state_dict(), pt)  # a PyTorch zip archive renamed .safetensors
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(pt)
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(raw)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello world, not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(junk)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(empty)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not a gentool checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_refuses_truncated_file_and_wrong_model(tmp_path):
    path = save_checkpoint(tmp_path / "a.safetensors", {"g": _net()}, _meta())
    with pytest.raises(CheckpointError, match="of model 'toy'.*not 'vae'"):
        load_checkpoint(path, model="vae")
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(cut)
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"]["gentool"] = "{not json"
    body = json.dumps(header).encode()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(body)) + body + data[8 + n :])
    with pytest.raises(CheckpointError, match="corrupt gentool metadata"):
        load_checkpoint(bad)
    assert read_header(path)["__metadata__"]["format"] == FORMAT


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "x.bin"
    write_atomic(target, b"old")

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]  # no temporary left behind


def test_cli_info_and_refusal(tmp_path):
    from typer.testing import CliRunner

    from gentool.cli import app

    path = save_checkpoint(tmp_path / "a.safetensors", {"g": _net()}, _meta())
    res = CliRunner().invoke(app, ["info", str(path), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["model"] == "toy" and doc["parameters"]["g"] == 4 * 8 + 8 + 8 * 2 + 2 + 16
    assert doc["tensors"]["g.0.weight"]["shape"] == [8, 4]
    res = CliRunner().invoke(app, ["info", str(path)])
    assert "g.0.weight" in res.output and "digits" in res.output
    pt = tmp_path / "p.safetensors"
    torch.save({"a": torch.ones(1)}, pt)
    res = CliRunner().invoke(app, ["info", str(pt)])
    assert res.exit_code == 1 and "never unpickles" in res.output
