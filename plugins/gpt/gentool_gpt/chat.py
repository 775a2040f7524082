"""``gentool chat``: talk to a ``gpt`` model of yours or to any transformers causal LM.

Interactive in a terminal: answers stream token by token; Ctrl-C stops the answer (the part
already written stays in the conversation) and returns to the prompt; Ctrl-C or Ctrl-D at the
prompt ends the session. Line editing and history come from ``readline`` (history kept in
gentool's cache folder). A line ending in ``\\`` continues on the next line; a line starting with
``\"\"\"`` opens a block closed by a line ending in ``\"\"\"``. Slash commands: see :data:`HELP`.

Not interactive: ``gentool chat -m "question"`` and ``echo question | gentool chat`` print one
answer on stdout and exit (notes go to stderr). Piped stdin may hold slash commands too, each on a
line of its own (``printf '/set temperature 0\\nhello\\n' | gentool chat``): they run in order, the
lines between them are one message each; a command that fails ends the run (exit 1).

Every value a user gives (flags, ``/set``) is checked before use (:meth:`Settings.check`), and in
the interactive session any error inside a turn or a command ends that turn only, as one line:
the session and its history go on.

This module is imported by the plugin's entry point to add the verb, so it imports no torch at
module level; the backends load inside the command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TextIO

from gentool import GentoolError

if TYPE_CHECKING:
    from gentool_gpt.backends import Backend, Settings

HELP = """\
commands:
  /help                 this list
  /system TEXT          set the system prompt (/system alone shows it; /system - removes it)
  /set NAME VALUE       temperature, top_k, top_p, max_tokens or seed ('none' turns top_k/top_p/seed off)
  /clear                forget the conversation (the system prompt stays)
  /save FILE            write the conversation as JSON ({"messages": [{"role", "content"}]})
  /load FILE            read a conversation (OpenAI messages or ShareGPT conversations JSON)
  /status               model, device, settings, tokens in context
  /exit                 leave (also /quit, Ctrl-D, Ctrl-C at the prompt)
input: end a line with \\ to continue it; \"\"\" opens a multi-line block, \"\"\" closes it.
Ctrl-C while an answer streams stops that answer."""

SETTABLE = ("temperature", "top_k", "top_p", "max_tokens", "seed")
#: Command names (as typed after ``/``); in piped input only these make a line a command.
COMMANDS = ("help", "system", "set", "clear", "save", "load", "status", "exit", "quit", "q")
PROMPT, MORE = ">>> ", "... "


def register(app: Any) -> None:
    """Add the ``chat`` verb to gentool's Typer app (called from the plugin's commands hook)."""
    import typer

    @app.command("chat")
    def chat(
        model: Optional[str] = typer.Option(
            None, "--model", help="A gpt run name or folder, a checkpoint file, hf://owner/repo, a transformers "
                                  "model folder, or a hub id (default: the newest gpt run)."),
        system: Optional[str] = typer.Option(None, "--system", help="System prompt."),
        # ranges are checked by Settings.check (one line, and nan/inf refused), not by click
        temperature: float = typer.Option(0.8, "--temperature", help="Sampling temperature (0: greedy)."),
        top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample among the k likeliest tokens (>= 1)."),
        top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling mass, in (0, 1]."),
        max_tokens: int = typer.Option(256, "--max-tokens", help="Longest answer in tokens (>= 1)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Random seed, 0..2**63-1 (same seed, same answers)."),
        message: Optional[str] = typer.Option(None, "-m", "--message", help="Answer this one message and exit."),
        device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|mps."),
        quantize: str = typer.Option(
            "auto", "--quantize", help="Weights of a pretrained model (GGUF, Hugging Face): auto|none|bf16|int8|int4 "
                                       "(auto: the fastest this machine has, measured once)."),
        context: Optional[int] = typer.Option(
            None, "--context", help="Most positions of a pretrained model kept in view (default: its own, at most 8192)."),
    ) -> None:
        """Chat with a gpt model (or any transformers causal LM): streaming, history, slash commands."""
        from gentool_gpt.backends import Settings

        settings = Settings(temperature=temperature, top_k=top_k, top_p=top_p, max_tokens=max_tokens,
                            seed=seed).check(flags=True)
        from gentool import QUANTIZE

        if context is not None and context < 2:
            raise GentoolError(f"--context must be at least 2, not {context}")
        if quantize not in QUANTIZE:  # before any model loads
            raise GentoolError(f"--quantize must be one of {', '.join(QUANTIZE)}, not {quantize!r}")
        code = run(model, settings, system=system, message=message, device=device, quantize=quantize,
                   context=context)
        raise typer.Exit(code)


def run(model: str | None, settings: "Settings", *, system: str | None = None, message: str | None = None,
        device: str = "auto", stdin: TextIO | None = None, stdout: TextIO | None = None,
        quantize: str = "auto", context: int | None = None) -> int:
    """Open the backend and chat: one answer for ``message``, the steps of piped stdin, else interactively."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    interactive = message is None and stdin.isatty()
    steps: list[tuple[str, str]] = []
    if message is not None:
        message = message.strip()
        steps = [("message", message)] if message else []
    elif not interactive:
        steps = piped_steps(stdin.read())
    if not interactive and not steps:
        raise GentoolError("no message: give one with -m TEXT or on stdin (echo hi | gentool chat)")

    from gentool import pick_device

    from gentool_gpt.backends import open_backend

    backend = open_backend(model, pick_device(device), quantize=quantize, context=context)
    session = ChatSession(backend, settings, system=system, out=stdout,
                          notes=stdout if interactive else sys.stderr)
    if not interactive:
        try:
            for kind, text in steps:
                if kind == "command":
                    if not session.command(text, strict=True):
                        break
                else:
                    session.answer(text)
        except KeyboardInterrupt:
            return 130
        return 0
    return session.loop()


def is_command(line: str) -> bool:
    """Whether a piped line is a slash command: ``/`` then one of :data:`COMMANDS`."""
    return line.startswith("/") and line[1:].strip().partition(" ")[0].lower() in COMMANDS


def piped_steps(text: str) -> list[tuple[str, str]]:
    """Piped stdin as steps: ``("command", line)`` for each command line, ``("message", text)`` for
    each run of other lines between them (a whole document stays one message).

    Only known command names count (:data:`COMMANDS`): a document's lines that start with ``/``
    for other reasons (``/usr/bin/env``, ``// comment``) stay text.
    """
    steps: list[tuple[str, str]] = []
    lines: list[str] = []

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            steps.append(("message", body))
        lines.clear()

    for line in text.splitlines():
        if is_command(line):
            flush()
            steps.append(("command", line.strip()))
        else:
            lines.append(line)
    flush()
    return steps


def _one_line(exc: BaseException) -> str:
    """An error as one line: a GentoolError's message, else its type and first line."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, GentoolError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class ChatSession:
    """One conversation: the messages, the settings, and the commands that change them."""

    def __init__(self, backend: "Backend", settings: "Settings", *, system: str | None = None,
                 out: TextIO | None = None, notes: TextIO | None = None):
        self.backend = backend
        self.settings = settings
        self.system = system or None
        self.history: list[dict[str, str]] = []  # user/assistant turns, oldest first
        self.out = out or sys.stdout
        self.notes = notes or self.out
        settings.check()
        backend.reseed(settings.seed)

    # -- the conversation -------------------------------------------------------------------
    @property
    def messages(self) -> list[dict[str, str]]:
        """The conversation in OpenAI messages form, system prompt first."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.history

    def note(self, text: str) -> None:
        self.notes.write(f"[{text}]\n")
        self.notes.flush()

    def fit_context(self) -> int:
        """Drop the oldest turns (never the system prompt, never the newest message) until the
        conversation plus room for an answer fits the model's context; return how many went."""
        limit = self.backend.context_length
        room = min(self.settings.max_tokens, max(1, limit // 4))
        dropped = 0
        while len(self.history) > 1 and self.backend.count_tokens(self.messages) + room > limit:
            self.history.pop(0)
            dropped += 1
            while len(self.history) > 1 and self.history[0]["role"] != "user":  # start on a user turn
                self.history.pop(0)
                dropped += 1
        if dropped:
            self.note(f"context of {limit} tokens full: dropped the {dropped} oldest message(s)"
                      + ("; the system prompt is kept" if self.system else ""))
        return dropped

    def answer(self, text: str) -> str:
        """Add a user message, stream the answer to ``out``, keep it; Ctrl-C keeps the part so far."""
        self.history.append({"role": "user", "content": text})
        try:
            self.fit_context()
        except BaseException:
            self.history.pop()
            raise
        pieces: list[str] = []
        interrupted = False
        stream = self.backend.chat_stream(self.messages, self.settings)
        try:
            for piece in stream:
                pieces.append(piece)
                self.out.write(piece)
                self.out.flush()
        except KeyboardInterrupt:
            interrupted = True
        except BaseException:  # the model failed: forget the question, keep the session
            self.history.pop()
            if pieces:
                self.out.write("\n")
            raise
        finally:
            stream.close()  # type: ignore[attr-defined]
        reply = "".join(pieces)
        self.history.append({"role": "assistant", "content": reply})
        self.out.write("\n")
        self.out.flush()
        limit = self.backend.context_length
        cut = getattr(self.backend, "cut_tokens", 0)
        if cut:  # what fit_context cannot help: the newest message (and system prompt) alone overflow
            self.note(f"this message is longer than the model's context ({limit} tokens): the model saw only "
                      f"its end ({cut} tokens of the conversation left out)")
        if interrupted:
            self.note("answer stopped (Ctrl-C); the part above stays in the conversation")
            if self.notes is not self.out:  # not interactive: stopping means leaving
                raise KeyboardInterrupt
        elif self.backend.stop_reason == "context full":
            self.note(f"answer cut: the model's context of {limit} tokens is full ({self.backend.last_tokens} "
                      "tokens); the oldest turns make room for the next message")
        elif self.backend.stop_reason != "end of turn":
            self.note(f"answer cut at {self.backend.stop_reason} "
                      f"({self.backend.last_tokens} tokens; /set max_tokens N for longer)")
        return reply

    # -- slash commands ---------------------------------------------------------------------
    def command(self, line: str, *, strict: bool = False) -> bool:
        """Run one slash command; return False when the session should end.

        An error (a bad value, a file that cannot be read, ...) is a one-line note and the session
        goes on; with ``strict`` (piped input) it is raised as a :class:`GentoolError` instead.
        """
        name, _, arg = line[1:].strip().partition(" ")
        name, arg = name.lower(), arg.strip()
        handler: Callable[[str], Optional[bool]] | None = getattr(self, f"_cmd_{name}", None)
        if name in ("exit", "quit", "q"):
            return False
        if handler is None or not name:
            if strict:
                raise GentoolError(f"unknown command /{name}: see gentool chat's /help")
            self.note(f"unknown command /{name}: type /help for the commands")
            return True
        try:
            handler(arg)
        except Exception as exc:  # noqa: BLE001 - a command never ends the session
            if strict:
                raise GentoolError(f"/{name}: {_one_line(exc)}") from None
            self.note(f"error: {_one_line(exc)}")
        return True

    def _cmd_help(self, arg: str) -> None:
        self.out.write(HELP + "\n")

    def _cmd_system(self, arg: str) -> None:
        if not arg:
            self.note(f"system prompt: {self.system!r}" if self.system else "no system prompt (/system TEXT sets one)")
        elif arg == "-":
            self.system = None
            self.note("system prompt removed")
        else:
            self.system = arg
            self.note("system prompt set")

    def _cmd_set(self, arg: str) -> None:
        from gentool_gpt.backends import Settings

        key, _, value = arg.partition(" ")
        key, value = key.strip().replace("-", "_"), value.strip()
        if key not in SETTABLE or not value:
            raise GentoolError(f"usage: /set NAME VALUE with NAME one of {', '.join(SETTABLE)}")
        off = value.lower() in ("none", "off")
        try:
            if key in ("temperature", "top_p"):
                new: Any = None if off and key == "top_p" else float(value)
            else:
                new = None if off and key != "max_tokens" else int(value)
        except ValueError:
            raise GentoolError(f"{key} needs a {'number' if key in ('temperature', 'top_p') else 'whole number'}, "
                               f"not {value!r}") from None
        trial = Settings(**{**self.settings.__dict__, key: new}).check()
        self.settings = trial
        if key == "seed":
            self.backend.reseed(new)
        self.note(f"{key} = {new}")

    def _cmd_clear(self, arg: str) -> None:
        self.history.clear()
        self.note("conversation cleared" + (" (system prompt kept)" if self.system else ""))

    def _cmd_save(self, arg: str) -> None:
        if not arg:
            raise GentoolError("usage: /save FILE")
        from gentool import write_atomic

        path = Path(arg).expanduser()
        doc = {"messages": self.messages}
        try:
            write_atomic(path, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        except OSError as exc:
            raise GentoolError(f"cannot write {path}: {exc.strerror or exc}") from None
        self.note(f"saved {len(doc['messages'])} messages to {path}")

    def _cmd_load(self, arg: str) -> None:
        if not arg:
            raise GentoolError("usage: /load FILE")
        from gentool_gpt.conversations import read_conversation

        path = Path(arg).expanduser()
        messages = read_conversation(path)
        system = [m["content"] for m in messages if m["role"] == "system"]
        self.system = system[0] if system else self.system
        self.history = [m for m in messages if m["role"] != "system"]
        self.note(f"loaded {len(messages)} messages from {path}")

    def _cmd_status(self, arg: str) -> None:
        rows = dict(self.backend.describe())
        s = self.settings
        seed = f"{s.seed}" if s.seed is not None else f"random ({self.backend.seed_used}; /set seed N to fix)"
        rows["settings"] = (f"temperature {s.temperature}, top_k {s.top_k}, top_p {s.top_p}, "
                            f"max_tokens {s.max_tokens}, seed {seed}")
        rows["system"] = repr(self.system) if self.system else "none"
        used = self.backend.count_tokens(self.messages)
        rows["context"] = f"{used} of {self.backend.context_length} tokens used ({len(self.history)} messages)"
        width = max(len(k) for k in rows)
        self.out.write("".join(f"  {k:<{width}}  {v}\n" for k, v in rows.items()))

    # -- the terminal loop ------------------------------------------------------------------
    def loop(self) -> int:
        """Read, answer, repeat, until /exit, Ctrl-D or Ctrl-C at the prompt."""
        import signal
        import threading

        # Ctrl-C must stop an answer even when gentool was started with SIGINT ignored (a
        # background job, nohup): Python then keeps SIG_IGN instead of raising KeyboardInterrupt.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        history_file = _setup_readline()
        desc = self.backend.describe()
        self.out.write(f"chatting with {desc.get('model')} ({desc.get('backend')}, {desc.get('device')}); "
                       "/help for commands, Ctrl-D to leave\n")
        try:
            while True:
                try:
                    text = read_message(input)
                except (EOFError, KeyboardInterrupt):
                    self.out.write("\n")
                    return 0
                if text is None or not text.strip():
                    continue
                if text.startswith("/") and "\n" not in text:
                    if not self.command(text):
                        return 0
                    continue
                try:
                    self.answer(text)
                except KeyboardInterrupt:  # before the first token (while the prompt was prepared)
                    self.out.write("\n")
                    self.note("answer stopped (Ctrl-C)")
                except Exception as exc:  # noqa: BLE001 - an error ends this turn, never the session
                    self.note(f"error: {_one_line(exc)}")
        finally:
            _save_readline(history_file)


def read_message(read: Callable[[str], str]) -> str | None:
    """One message from the user: a line, ``\\``-continued lines, or a \"\"\" block."""
    line = read(PROMPT)
    if line.strip().startswith('"""'):
        body = line.strip()[3:]
        if body.endswith('"""'):
            return body[:-3]
        lines = [body] if body else []
        while True:
            nxt = read(MORE)
            if nxt.rstrip().endswith('"""'):
                lines.append(nxt.rstrip()[:-3])
                return "\n".join(lines).strip("\n")
            lines.append(nxt)
    lines = []
    while line.endswith("\\"):
        lines.append(line[:-1])
        line = read(MORE)
    lines.append(line)
    return "\n".join(lines)


def _setup_readline() -> Path | None:
    """Turn on line editing and load the history file (nothing happens without readline)."""
    try:
        import readline
    except ImportError:
        return None
    from gentool import cache_dir

    path = cache_dir() / "chat_history"
    try:
        readline.set_history_length(1000)
        if path.exists():
            readline.read_history_file(str(path))
    except OSError:
        pass
    return path


def _save_readline(path: Path | None) -> None:
    if path is None:
        return
    try:
        import readline

        path.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(str(path))
    except (ImportError, OSError):
        pass
