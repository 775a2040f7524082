"""The Python API against wrong arguments (issue 30): every entry point answers a wrong type or value
with a one-line ``gentool.GentoolError`` subclass, never a TypeError, RuntimeError or ValueError from
deep inside; an in-memory sample too large for the address space left is refused before it is drawn."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import gentool


@pytest.fixture
def toy_model(toy_registry, workdir):
    gentool.train("toy", epochs=1, quiet=True, name="t")
    return gentool.load("toy/t", device="cpu")


CALLS = {
    "train(None)": lambda m: gentool.train(None),
    "train(5)": lambda m: gentool.train(5),
    "train('')": lambda m: gentool.train(""),
    "train(config=5)": lambda m: gentool.train("toy", config=5),
    "train(config=[1])": lambda m: gentool.train("toy", config=[1]),
    "train(name=5)": lambda m: gentool.train("toy", name=5, epochs=1, quiet=True),
    "train(options=5)": lambda m: gentool.train("toy", options=5),
    "train(resume=5.5)": lambda m: gentool.train("toy", resume=5.5),
    "load(5)": lambda m: gentool.load(5),
    "load([])": lambda m: gentool.load([]),
    "load('')": lambda m: gentool.load(""),
    "load(model=5)": lambda m: gentool.load(model=5),
    "load(device=5)": lambda m: gentool.load("toy/t", device=5),
    "resolve_checkpoint(5, 5)": lambda m: gentool.resolve_checkpoint(5, 5),
    "sample(seed='x')": lambda m: m.sample(2, seed="x"),
    "sample(seed=1.5)": lambda m: m.sample(2, seed=1.5),
    "sample(seed=True)": lambda m: m.sample(2, seed=True),
    "sample(seed=-1)": lambda m: m.sample(2, seed=-1),
    "sample(seed=2**64)": lambda m: m.sample(2, seed=2**64),
    "sample(out=5)": lambda m: m.sample(2, out=5),
    "sample(options=5)": lambda m: m.sample(2, options=5),
    "save_samples(out=5)": lambda m: m.save_samples(2, 5),
    "save_samples(seed='x')": lambda m: m.save_samples(2, "o", seed="x"),
    "Samples.save(5)": lambda m: m.sample(2).save(5),
    "evaluate(seed='x')": lambda m: m.evaluate(seed="x", n=8),
    "evaluate(split=5)": lambda m: m.evaluate(split=5, n=8),
    "evaluate(features=5)": lambda m: m.evaluate(features=5, n=8),
    "evaluate(options=5)": lambda m: m.evaluate(options=5, n=8),
    "discriminate(batch_size=0)": lambda m: m.discriminate(torch.zeros(2, 1, 8, 8), batch_size=0),
    "open_chat(5)": lambda m: gentool.open_chat(5),
    "open_chat(device=5)": lambda m: gentool.open_chat("x", device=5),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_wrong_arguments_are_one_line_gentool_errors(toy_model, call):
    with pytest.raises(gentool.GentoolError) as exc:
        CALLS[call](toy_model)
    message = str(exc.value)
    assert message and "\n" not in message and len(message) < 300, message


def test_right_arguments_still_work(toy_model, tmp_path):
    from pathlib import Path

    a = toy_model.sample(3, seed=2**63 - 1, out=Path(tmp_path / "x"), options={})
    assert len(a) == 3 and len(toy_model.sample(3, seed=0)) == 3
    assert gentool.load(Path("runs/toy/t"), model="toy", device="cpu").name == "toy"
    assert toy_model.sample(2).save(tmp_path / "s")
    assert gentool.train("toy", config={"train": {"epochs": 1}}, options={}, quiet=True, name="u").epoch == 1


def test_an_in_memory_sample_is_planned_against_the_address_space_left(toy_model, toy_env, workdir):
    """Under ``ulimit -v`` 8 GiB, 10**7 toy samples (10 GB planned) are refused in one line before the
    allocator fails; 10**9 are refused against the machine's memory; a small request still works."""
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
        import gentool
        m = gentool.load("toy/t", device="cpu")
        for n in (10**7, 10**9):
            try:
                m.sample(n)
                print("drawn", n)
            except gentool.GentoolError as exc:
                print(type(exc).__name__, exc)
        print("small", len(m.sample(16)))
        try:  # gentool evaluate -n draws its samples in memory too
            m.evaluate(n=10**7)
            print("evaluated")
        except gentool.GentoolError as exc:
            print(type(exc).__name__, exc)
    """)
    res = subprocess.run([sys.executable, "-c", script], env=toy_env, cwd=workdir, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("DataError 10,000,000 samples") and "address-space" in lines[0], res.stdout
    assert lines[1].startswith("DataError 1,000,000,000 samples"), res.stdout
    assert lines[2] == "small 16"
    assert lines[3].startswith("DataError evaluating on n=10,000,000 samples") and "smaller n" in lines[3], res.stdout


def test_the_allocators_refusal_is_one_line(toy_model, monkeypatch):
    """Where the plan is wrong (another process took the memory), the allocator's error still becomes
    one line that says what to do."""
    def refuse(*_a, **_k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
                           "you tried to allocate 10240000000 bytes.")

    monkeypatch.setattr(type(toy_model), "_draw", refuse)
    with pytest.raises(gentool.DataError, match="did not fit in memory.*save_samples"):
        toy_model.sample(4)
    from gentool.plugins import get_registry

    reg = get_registry()
    monkeypatch.setattr(reg, "call", lambda hook, *a, **k: refuse() if hook == "gentool_evaluate" else None)
    with pytest.raises(gentool.DataError, match="evaluating on n=8 samples did not fit in memory"):
        toy_model.evaluate(n=8)



def test_a_tool_called_from_python_checks_its_arguments(tmp_path):
    tool = gentool.Tool("echo", "answers each file", run=lambda files, _o: [gentool.ToolAnswer(f) for f, _ in files])
    assert [a.file for a in tool([("a.png", b"x")])] == ["a.png"]
    for files, options in ((5, None), ("a.png", None), ([("a.png", "text")], None), ([], 5)):
        with pytest.raises(gentool.ConfigError):
            tool(files, options)
    (tmp_path / "one.png").write_bytes(b"x")
    assert gentool.find_files(tmp_path, {".png"}) == gentool.find_files([str(tmp_path)], {".png"}) == [tmp_path / "one.png"]
