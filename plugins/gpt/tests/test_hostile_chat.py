"""Hostile input to ``gentool chat`` (issue 13): values a user types never kill the session.

Flags and ``/set`` values are checked alike (finite, in range, the seed in 0..2**63-1), each with
one line; an error inside a turn or a command ends that turn only; piped lines that are slash
commands run as commands. A stand-in backend (the real :class:`Backend` base, so ``reseed`` is
torch's) keeps these fast; test_chat.py drives the same paths with a trained model.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from gentool.errors import GentoolError

from gentool_gpt.backends import Backend, Settings


class FakeBackend(Backend):
    """Echoes the last message in capitals; records the settings each answer was made with."""

    context_length, stop_reason, last_tokens = 1000, "end of turn", 0

    def __init__(self):
        super().__init__()
        self.used: list[Settings] = []

    def count_tokens(self, messages):
        return sum(len(m["content"]) for m in messages)

    def describe(self):
        return {"model": "fake", "backend": "fake", "device": "cpu"}

    def chat_stream(self, messages, settings):
        self.used.append(settings)
        text = messages[-1]["content"]
        if text == "boom":
            raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0\nmore")
        for word in text.split():
            yield word.upper() + " "


def make_session(**settings):
    from gentool_gpt.chat import ChatSession

    out = io.StringIO()
    return ChatSession(FakeBackend(), Settings(**settings), out=out), out


# -- flags ------------------------------------------------------------------------------------
BAD_FLAGS = [("--temperature", "nan"), ("--temperature", "inf"), ("--temperature", "-1"), ("--top-p", "nan"),
             ("--top-p", "7"), ("--top-p", "0"), ("--top-k", "0"), ("--max-tokens", "0"),
             ("--seed", "99999999999999999999999"), ("--seed", "-1")]


@pytest.mark.parametrize("flag,value", BAD_FLAGS)
def test_bad_flags_are_one_line_errors(tmp_path, flag, value):
    env = {**os.environ, "GENTOOL_RUNS": str(tmp_path / "runs"), "GENTOOL_CACHE": str(tmp_path / "cache"),
           "GENTOOL_PLUGINS": "gpt", "OMP_NUM_THREADS": "1", "TERM": "dumb", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "gentool", "chat", "-m", "hi", flag, value], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert flag in lines[0] and value in lines[0]  # checked before any model is looked for


@pytest.mark.parametrize("values", [dict(temperature=float("nan")), dict(temperature=float("inf")),
                                    dict(top_p=float("nan")), dict(top_k=2.5), dict(max_tokens=True),
                                    dict(seed=2**63), dict(seed=-1)])
def test_settings_check_refuses_non_finite_and_out_of_range(values):
    with pytest.raises(GentoolError) as err:
        Settings(**values).check()
    assert "\n" not in str(err.value) and next(iter(values)) in str(err.value)
    Settings(seed=2**63 - 1, top_p=1.0, top_k=1, temperature=0.0).check()  # the edges are fine


# -- /set -------------------------------------------------------------------------------------
@pytest.mark.parametrize("line,why", [
    ("/set temperature nan", "finite"), ("/set temperature inf", "finite"), ("/set temperature -inf", "finite"),
    ("/set temperature 1e400", "finite"), ("/set top_p nan", "finite"), ("/set top_p -0.5", "(0, 1]"),
    ("/set top_k 0", "at least 1"), ("/set seed 99999999999999999999999", "0..9223372036854775807"),
    ("/set seed -1", "0..9223372036854775807"), ("/set max_tokens 1e9", "whole number")])
def test_bad_set_values_are_refused_and_the_session_goes_on(line, why):
    session, out = make_session(temperature=0.5, max_tokens=8, seed=3)
    before = Settings(**session.settings.__dict__)
    assert session.command(line) is True
    assert session.settings == before
    notes = [n for n in out.getvalue().splitlines() if n]
    assert len(notes) == 1 and notes[0].startswith("[error: ") and why in notes[0], notes
    session.answer("still here")
    assert session.history[-1] == {"role": "assistant", "content": "STILL HERE "}


def test_a_turn_that_fails_ends_only_that_turn(monkeypatch):
    """Any error inside a turn (here torch's RuntimeError) or a command is one line; the session
    and its history go on."""
    lines = iter(["one", "boom", "two", "/status", "three", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(lines))
    session, out = make_session()
    calls = []
    describe = session.backend.describe

    def breaks_after_the_greeting():
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("describe failed\nsecond line")
        return describe()

    monkeypatch.setattr(session.backend, "describe", breaks_after_the_greeting)
    assert session.loop() == 0
    text = out.getvalue()
    assert "[error: RuntimeError: probability tensor contains either `inf`, `nan` or element < 0]" in text
    assert "[error: RuntimeError: describe failed]" in text and "second line" not in text
    assert [m["content"] for m in session.history] == ["one", "ONE ", "two", "TWO ", "three", "THREE "]


def test_settings_given_to_a_session_are_checked():
    from gentool_gpt.chat import ChatSession

    with pytest.raises(GentoolError, match="seed"):
        ChatSession(FakeBackend(), Settings(seed=10**30), out=io.StringIO())


def test_reseed_refuses_a_seed_torch_cannot_take():
    with pytest.raises(GentoolError, match="seed"):
        FakeBackend().reseed(99999999999999999999999)


# -- piped input ------------------------------------------------------------------------------
@pytest.fixture
def piped(monkeypatch):
    """run() with piped stdin and the fake backend; returns (exit code, stdout, backend)."""
    backends: list[FakeBackend] = []

    def fake_open(ref, device="cpu", **options):  # options: quantize, context
        backends.append(FakeBackend())
        return backends[-1]

    monkeypatch.setattr("gentool_gpt.backends.open_backend", fake_open)

    def go(text: str, **settings):
        from gentool_gpt.chat import run

        out = io.StringIO()
        code = run(None, Settings(**settings), stdin=io.StringIO(text), stdout=out, device="cpu")
        return code, out.getvalue(), backends[-1]

    return go


def test_piped_slash_lines_are_commands(piped, capsys):
    code, out, backend = piped("/set temperature 0\nhello\n", temperature=0.8)
    assert code == 0 and out == "HELLO \n"
    assert [s.temperature for s in backend.used] == [0.0]
    assert "temperature = 0.0" in capsys.readouterr().err  # notes go to stderr, stdout holds the answer


def test_piped_commands_split_messages_and_documents_stay_whole(piped, tmp_path):
    saved = tmp_path / "c.json"
    code, out, backend = piped(f"hi\n/clear\nwho are\nyou\n/save {saved}\n")
    assert code == 0 and out == "HI \nWHO ARE YOU \n"
    assert '"content": "who are\\nyou"' in saved.read_text()  # consecutive lines: one message
    code, out, _ = piped("/usr/bin/env is slow\n// why?\n")  # not command names: text
    assert out == "/USR/BIN/ENV IS SLOW // WHY? \n"
    code, out, backend = piped("/status\n")  # commands only: fine
    assert code == 0 and "fake" in out and not backend.used
    code, out, backend = piped("/exit\nhello\n")
    assert code == 0 and not backend.used


def test_a_failing_piped_command_is_one_line_and_nothing_is_answered(piped):
    with pytest.raises(GentoolError, match=r"^/set: temperature must be a finite number, not nan$"):
        piped("/set temperature nan\nhello\n")


def test_message_flag_text_is_never_a_command(piped, monkeypatch):
    from gentool_gpt.chat import run

    out = io.StringIO()
    assert run(None, Settings(), message="/set temperature 0", stdout=out, device="cpu") == 0
    assert out.getvalue() == "/SET TEMPERATURE 0 \n"


def test_generate_refuses_non_finite_values():
    import torch

    from gentool_gpt.generate import sample_next

    for kw in (dict(temperature=float("nan")), dict(temperature=float("inf")), dict(top_p=float("nan"))):
        with pytest.raises(ValueError, match="finite"):
            sample_next(torch.zeros(5), **kw)


@pytest.mark.parametrize("flag", ["temperature", "top_p"])
def test_sample_and_evaluate_flags_refuse_nan(flag):
    """`gentool sample gpt --temperature nan` is a one-line ConfigError before any model runs."""
    import gentool
    from gentool.engine import verb_options

    spec = gentool.ModelSpec("gpt", "transformer", "", sample_options=__import__(
        "gentool_gpt.configs", fromlist=["GPTSampleOptions"]).GPTSampleOptions)
    with pytest.raises(gentool.ConfigError, match="must be"):
        verb_options(spec, "sample", {flag: "nan"})
