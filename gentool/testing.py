"""Tools for plugin authors' tests: what every gentool plugin should pass.

Installed with gentool as a pytest plugin (entry point ``pytest11``), so a plugin's tests get the
fixtures without importing anything:

- ``gentool_env``: an isolated gentool (runs folder, cache and working folder in a temporary
  folder; the plugin registry reloaded), with ``.run("train", ...)`` for the real command line in
  a fresh interpreter, ``.env`` for your own subprocesses, and ``.add_plugin(name, source)`` to
  load a plugin written on the spot through a real entry point (as pytest's ``pytester`` does for
  pytest plugins).

and functions to call from a test:

- :func:`assert_resume_is_exact`: two epochs straight, or one then ``--resume``, give the same
  tensors bit for bit;
- :func:`assert_mid_epoch_resume_is_exact`: a run killed (SIGKILL, no clean-up) right after a
  ``--save-every`` checkpoint in the middle of an epoch, then resumed, ends with the same tensors
  and the same per-epoch losses in ``metrics.jsonl`` as an uninterrupted run;
- :func:`assert_imports_only_the_facade`: a plugin's sources import gentool only as ``gentool``
  (and ``gentool.metrics``), never its internal modules, which may move;
- :func:`run_cli`: ``gentool ARGS`` in a fresh interpreter; :func:`invoke`: the same answer from this
  process, seconds faster (it falls back to a fresh interpreter where only that will do).

    def test_my_model(gentool_env):
        gentool_env.run("train", "mymodel", "--epochs", "1", check=True)
        m = gentool_env.load("mymodel")           # the Python API, in this process
        assert m.sample(4).images.shape[0] == 4
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Crash tests: a ``gentool`` that :func:`run_cli` or :func:`invoke` starts with this variable set
#: is killed (SIGKILL, no clean-up) right after the ``--save-every`` checkpoint written at this
#: step; with :data:`KILL_AFTER_BEST_ENV`, right after the ``best`` checkpoint of that epoch (before
#: its ``last``). gentool itself reads neither: this module starts such a process through
#: :func:`_main_with_crash_points`, which installs the harness's checkpoint callback.
KILL_AT_STEP_ENV = "GENTOOL_TEST_KILL_AT_STEP"
KILL_AFTER_BEST_ENV = "GENTOOL_TEST_KILL_AFTER_BEST"
#: Environment variables that libraries read once, at import: a change needs a fresh interpreter.
_READ_AT_IMPORT = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_")
#: What a plugin's own modules may import from gentool.
FACADE_MODULES = frozenset({"gentool", "gentool.metrics"})


def run_cli(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``gentool ARGS`` in a fresh interpreter (entry points as a user's shell sees them)."""
    return subprocess.run(_command(args, os.environ if env is None else env), env=None if env is None else dict(env),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _command(args: tuple[str, ...], env: Mapping[str, str]) -> list[str]:
    """The command line of a fresh interpreter running ``gentool ARGS`` under ``env``: ``python -m
    gentool``, or where ``env`` names a crash point, the same killed there."""
    if _crash_points(env):
        return [sys.executable, "-c", "from gentool.testing import _main_with_crash_points; "
                "_main_with_crash_points()", *args]
    return [sys.executable, "-m", "gentool", *args]


def _crash_points(env: Mapping[str, str]) -> dict[str, int]:
    """The crash points ``env`` names: checkpoint kind (``last``, ``best``) -> step or epoch."""
    points = {}
    for kind, name in (("last", KILL_AT_STEP_ENV), ("best", KILL_AFTER_BEST_ENV)):
        raw = env.get(name, "")
        if raw.strip().isdigit():
            points[kind] = int(raw)
    return points


def _main_with_crash_points() -> None:
    """``gentool`` with the arguments after ``python -c CODE``, killed at the crash points that its
    environment names (right after the checkpoint the harness reports through its callback)."""
    from gentool import run_state
    from gentool.cli import main

    points = _crash_points(os.environ)

    def crash(kind: str, number: int) -> None:
        if points.get(kind) == number:
            _die_now()

    run_state.on_checkpoint(crash)
    main(sys.argv[1:])


def _die_now() -> None:
    """End this process at once, as SIGKILL does: no clean-up, no ``finally``, no flush."""
    import signal

    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)


def _fresh_only(args: tuple[str, ...], env: Mapping[str, str]) -> str | None:
    """Why ``gentool ARGS`` with ``env`` needs a fresh interpreter, or None when this one will do."""
    if next((a for a in args if not a.startswith("-")), None) == "serve":
        return "a server (it runs until stopped)"
    if _added_paths(env) is None:
        return "a PYTHONPATH whose modules clash with ones this process imported from elsewhere"
    if any(k.startswith("GENTOOL_TEST_KILL") and v for k, v in env.items()):
        return "a crash point (the process is killed)"
    if any(env.get(k) != os.environ.get(k) for k in {*env, *os.environ} if k.startswith(_READ_AT_IMPORT)):
        return "Hugging Face settings (read once, when their libraries are imported)"
    return None


def _added_paths(env: Mapping[str, str]) -> list[str] | None:
    """The folders ``env``'s PYTHONPATH adds to this process's (a plugin or distribution made on the
    spot), or None where this process cannot stand in for a fresh interpreter: a folder removed, or
    one holding a module this process already imported from somewhere else."""
    ours = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    theirs = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if any(p not in theirs for p in ours):
        return None
    added = [p for p in theirs if p not in ours]
    for folder in added:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            module = name[:-3] if name.endswith(".py") else name
            if name.endswith((".dist-info", ".egg-info")) or module == "__pycache__" or module not in sys.modules:
                continue
            where = getattr(sys.modules[module], "__file__", None) or ""
            if not os.path.abspath(where).startswith(os.path.abspath(folder) + os.sep):
                return None
    return added


def _fresh_thread_count(env: Mapping[str, str]) -> int:
    """The thread count torch starts with in a fresh interpreter given ``env`` (its OpenMP default:
    ``OMP_NUM_THREADS``, else one per CPU this process may run on)."""
    raw = env.get("OMP_NUM_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def invoke(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None,
           timeout: float = 900, stdin: str = "") -> subprocess.CompletedProcess:
    """``gentool ARGS`` in this process, as :func:`run_cli` would answer it, without its seconds of
    interpreter and torch start-up (the test suite's largest cost).

    For the call, the environment is ``env``, the working folder ``cwd``, the folders its PYTHONPATH
    adds are on ``sys.path``, the plugin registry is rebuilt from that environment and plugins add
    their verbs afresh, stdin holds ``stdin`` (not a terminal), stdout and stderr are captured, and
    torch's thread count is what a fresh interpreter would read from ``OMP_NUM_THREADS``; afterwards
    the environment, folder, registry, verbs, random streams, thread count and warning filters are
    put back. Falls back to a fresh interpreter where only that will do (:func:`_fresh_only`).
    """
    import contextlib
    import importlib
    import io
    import traceback
    import warnings

    env = dict(os.environ) if env is None else dict(env)
    if _fresh_only(args, env):
        return subprocess.run(_command(args, env), env=env, cwd=cwd, input=stdin,
                              capture_output=True, text=True, timeout=timeout)
    import torch

    from gentool import cli
    from gentool.plugins import set_registry
    from gentool.rng import caller_state_kept

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd, saved_stdin = dict(os.environ), os.getcwd(), sys.stdin
    saved_verbs, saved_groups = list(cli.app.registered_commands), list(cli.app.registered_groups)
    added = _added_paths(env) or []
    code: int = 0
    with caller_state_kept(), warnings.catch_warnings():
        try:
            os.environ.clear()
            os.environ.update(env)
            if cwd is not None:
                os.chdir(cwd)
            torch.set_num_threads(_fresh_thread_count(env))
            sys.path[:0] = added
            importlib.invalidate_caches()
            set_registry(None)
            cli._commands_added = False  # this environment's plugins add their own verbs
            sys.stdin = io.StringIO(stdin)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    cli.main(list(args))
                except SystemExit as exc:
                    if isinstance(exc.code, int) or exc.code is None:
                        code = exc.code or 0
                    else:
                        print(exc.code, file=sys.stderr)
                        code = 1
                except KeyboardInterrupt:
                    code = 130
                except Exception:  # what a fresh interpreter would print before dying
                    traceback.print_exc()
                    code = 1
        finally:
            for folder in added:
                if folder in sys.path:
                    sys.path.remove(folder)
            sys.stdin = saved_stdin
            cli.app.registered_commands[:], cli.app.registered_groups[:] = saved_verbs, saved_groups
            cli._commands_added = False
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
            set_registry(None)
    return subprocess.CompletedProcess(["gentool", *args], code, out.getvalue(), err.getvalue())


def _check(res: subprocess.CompletedProcess, what: str) -> None:
    assert res.returncode == 0, f"{what} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"


def _tensors_equal(a_path: Path, b_path: Path) -> tuple[Any, Any]:
    import torch

    from gentool.checkpoint import load_checkpoint

    a, b = load_checkpoint(a_path), load_checkpoint(b_path)
    assert a.step == b.step > 0, (a.step, b.step)
    ta, tb = a.tensors(), b.tensors()
    assert ta.keys() == tb.keys(), sorted(set(ta) ^ set(tb))
    differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differ, f"a resumed run differs from an uninterrupted one in {differ[:5]}"
    return a, b


def assert_resume_is_exact(model: str, *train_args: str, env: Mapping[str, str], runs: Path,
                           epochs: int = 2) -> tuple[Any, Any]:
    """Train ``epochs`` epochs straight, and ``epochs - 1`` then ``--resume`` to ``epochs``; assert
    that the two last checkpoints hold the same tensors, bit for bit (weights, optimizer state and
    the task's extra state: whatever a resume must restore).

    ``runs`` is the runs folder ``env`` points ``GENTOOL_RUNS`` at. Returns both checkpoints
    (straight, resumed) for further checks.
    """
    for name, n in (("straight", epochs), ("resumed", epochs - 1)):
        _check(invoke("train", model, "--epochs", str(n), "--name", name, *train_args, env=env), f"gentool train {model}")
    _check(invoke("train", model, "--resume", "resumed", "--epochs", str(epochs), "-q", env=env),
           f"gentool train {model} --resume")
    return _tensors_equal(Path(runs) / model / "straight" / "last.safetensors",
                          Path(runs) / model / "resumed" / "last.safetensors")


def _epoch_losses(run_dir: Path) -> list[dict[str, Any]]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if k.startswith("train_") or k in ("epoch", "step")}
            for r in records if r.get("type") == "epoch"]


def assert_mid_epoch_resume_is_exact(model: str, *train_args: str, env: Mapping[str, str], runs: Path,
                                     save_every: int, kill_at: int, epochs: int = 2) -> tuple[Any, Any]:
    """The crash test every model should pass: a run killed mid-epoch resumes exactly.

    Trains ``epochs`` epochs straight; trains the same run again with ``--save-every
    save_every``, killed with SIGKILL (no clean-up, as an out-of-memory kill or a power cut) right
    after the checkpoint at step ``kill_at`` (a multiple of ``save_every`` that falls inside an
    epoch); resumes it to the end. Asserts that the kill left a mid-epoch checkpoint, that the
    two last checkpoints hold the same tensors bit for bit, and that ``metrics.jsonl`` records the
    same per-epoch training losses (the resumed epoch's mean covers the whole epoch).
    """
    if kill_at % save_every:
        raise ValueError("kill_at must be a multiple of save_every (the kill follows that checkpoint)")
    runs = Path(runs)
    common = ("--epochs", str(epochs), "--save-every", str(save_every), *train_args)
    _check(invoke("train", model, *common, "--name", "straight", env=env), f"gentool train {model}")
    killed = run_cli("train", model, *common, "--name", "killed", env={**env, KILL_AT_STEP_ENV: str(kill_at)})
    assert killed.returncode in (-9, 137), (f"the run was not killed at step {kill_at} (exit {killed.returncode}): "
                                            f"is it past the end of training?\n{killed.stderr[-2000:]}")
    from gentool.checkpoint import load_checkpoint

    last = runs / model / "killed" / "last.safetensors"
    ckpt = load_checkpoint(last)
    assert ckpt.step == kill_at, f"the killed run's checkpoint is at step {ckpt.step}, not {kill_at}"
    assert ckpt.has_train_state, "the checkpoint has no training state"
    batch = _position(ckpt)[1]
    assert batch > 0, (f"step {kill_at} ends an epoch: choose kill_at inside an epoch to test a mid-epoch resume")
    _check(invoke("train", model, "--resume", "killed", "-q", env=env), f"gentool train {model} --resume")
    a, b = _tensors_equal(runs / model / "straight" / "last.safetensors", last)
    straight, resumed = _epoch_losses(runs / model / "straight"), _epoch_losses(runs / model / "killed")
    assert straight == resumed, f"per-epoch losses differ after resume:\n{straight}\n{resumed}"
    return a, b


def _position(ckpt: Any) -> tuple[int, int]:
    from gentool.checkpoint import TRAIN_PREFIX, unpack_state

    tensors = {k[len(TRAIN_PREFIX):]: v for k, v in ckpt.tensors(TRAIN_PREFIX).items()}
    pos = unpack_state(ckpt.meta["train_state"], tensors)["position"]
    return int(pos["epoch"]), int(pos["batch"])


def assert_imports_only_the_facade(package_file: str | os.PathLike) -> None:
    """Every ``.py`` beside ``package_file`` (its package) imports gentool only through the facade.

    ``import gentool``, ``from gentool import Task`` and ``gentool.metrics`` pass; ``from
    gentool.training import Task`` and ``from gentool import training`` fail, naming the file and
    line: internal modules may move.
    """
    root = Path(package_file).resolve().parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if node.module == "gentool":  # `from gentool import training` is the module, not the facade
                    names += [f"gentool.{a.name}" for a in node.names if a.name not in _facade_names()]
            for name in names:
                if (name == "gentool" or name.startswith("gentool.")) and name not in FACADE_MODULES:
                    bad.append(f"{path.relative_to(root.parent)}:{node.lineno}: {name}")
    assert not bad, "import these through the facade (`import gentool`; `from gentool import X`):\n" + "\n".join(bad)


def _facade_names() -> set[str]:
    import gentool

    return set(gentool._EXPORTS) | {"hookimpl", "__version__", "metrics", "*"}


def make_dist(where: Path, dist: str, entry_points: Mapping[str, str], version: str = "0.1.0") -> Path:
    """Write a minimal installed distribution (dist-info with ``gentool`` entry points) into ``where``.

    With ``where`` on ``sys.path`` or ``PYTHONPATH``, importlib.metadata finds it: a real entry
    point, as pip would install one, without installing anything.
    """
    info = Path(where) / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[gentool]\n{lines}\n")
    return Path(where)


@dataclass
class IsolatedGentool:
    """A gentool whose runs, cache and plugins live in one temporary folder (see ``gentool_env``)."""

    dir: Path
    env: dict[str, str]
    plugins: list[str] = field(default_factory=list)

    @property
    def runs(self) -> Path:
        return Path(self.env["GENTOOL_RUNS"])

    @property
    def cache(self) -> Path:
        return Path(self.env["GENTOOL_CACHE"])

    def run(self, *args: str, check: bool = False, timeout: float = 900) -> subprocess.CompletedProcess:
        """``gentool ARGS`` with this environment, in this folder (:func:`invoke`: in this process where
        a fresh interpreter would answer the same)."""
        res = invoke(*args, env=self.env, cwd=self.dir, timeout=timeout)
        if check:
            _check(res, "gentool " + " ".join(args))
        return res

    def load(self, ref: str | None = None, *, model: str | None = None, device: str = "cpu") -> Any:
        """:func:`gentool.load` in this process, seeing this environment's runs and plugins."""
        from gentool.engine import load

        return load(ref, model=model, device=device)

    def add_plugin(self, name: str, source: str, *, dist: str | None = None, version: str = "0.1.0") -> Path:
        """Write ``source`` as module ``name`` behind a real entry point named ``name`` and load it
        (in subprocesses and, once the registry is reloaded, in this process); loads only the
        plugins added this way, unless ``GENTOOL_PLUGINS`` is changed in ``env``."""
        import importlib

        from gentool.plugins import set_registry

        mods, site = self.dir / "plugins_src", self.dir / "plugins_site"
        mods.mkdir(parents=True, exist_ok=True)
        (mods / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        make_dist(site, dist or f"gentool-{name.replace('_', '-')}", {name: name}, version)
        for folder in (str(mods), str(site)):
            if folder not in sys.path:
                sys.path.insert(0, folder)
            parts = [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p]
            if folder not in parts:
                self.env["PYTHONPATH"] = os.pathsep.join([folder, *parts])
        importlib.invalidate_caches()
        sys.modules.pop(name, None)
        self.plugins.append(name)
        self.env["GENTOOL_PLUGINS"] = ",".join(self.plugins)
        os.environ["GENTOOL_PLUGINS"] = self.env["GENTOOL_PLUGINS"]
        set_registry(None)
        return mods / f"{name}.py"


try:
    import pytest
except ImportError:  # pragma: no cover - gentool itself does not need pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def gentool_env(tmp_path: Path, monkeypatch: Any) -> Any:
        """An isolated gentool: runs, cache and working folder under ``tmp_path``; every installed
        plugin loads (restrict with ``GENTOOL_PLUGINS`` or :meth:`IsolatedGentool.add_plugin`)."""
        from gentool.plugins import set_registry

        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("GENTOOL_RUNS", str(tmp_path / "runs"))
        monkeypatch.setenv("GENTOOL_CACHE", str(tmp_path / "cache"))
        if "GENTOOL_PLUGINS" in os.environ:
            monkeypatch.delenv("GENTOOL_PLUGINS")
        else:  # add_plugin sets it: make monkeypatch restore its absence
            monkeypatch.setenv("GENTOOL_PLUGINS", "")
            monkeypatch.delenv("GENTOOL_PLUGINS")
        monkeypatch.setattr(sys, "path", list(sys.path))
        set_registry(None)
        iso = IsolatedGentool(dir=tmp_path, env=dict(os.environ))
        yield iso
        set_registry(None)
