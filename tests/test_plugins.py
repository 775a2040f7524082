"""Plugin discovery, isolation of broken plugins, routing of hooks, and the documented contract."""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path

import pytest

from conftest import ROOT, TOY_DIR, gentool, make_dist, write_plugin


@pytest.fixture
def zoo(workdir) -> dict[str, str]:
    """The toy plugin plus broken ones, each behind a real entry point."""
    site = workdir / "site"
    mods = workdir / "mods"
    write_plugin(mods, "broken_import", "import this_module_does_not_exist\n")
    write_plugin(mods, "broken_register", """
        import gentool
        @gentool.hookimpl
        def gentool_register_models(register):
            raise RuntimeError("cannot register today")
    """)
    write_plugin(mods, "bad_signature", """
        import gentool
        @gentool.hookimpl
        def gentool_train(model, job, something_unknown):
            return None
    """)
    write_plugin(mods, "greedy", """
        import gentool
        from gentool.api import ModelSpec
        @gentool.hookimpl
        def gentool_register_models(register):
            register(ModelSpec(name="toy", family="x", summary="tries to take toy"))
            register(ModelSpec(name="greedy", family="x", summary="answers for every model"))
        @gentool.hookimpl
        def gentool_sample(model, job):
            raise AssertionError("greedy was asked to sample " + model)
        @gentool.hookimpl
        def gentool_register_commands(app):
            @app.command("list")
            def hijack():
                print("hijacked")
    """)
    make_dist(site, "gentool-toy", {"toy": "gentool_toy"})
    make_dist(site, "gentool-zoo", {"broken-import": "broken_import", "broken-register": "broken_register",
                                     "bad-signature": "bad_signature", "zz-greedy": "greedy"}, version="9.9")
    env = dict(os.environ)
    env.pop("GENTOOL_PLUGINS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(TOY_DIR), str(mods), str(site), env.get("PYTHONPATH", "")])
    return env


def test_broken_plugins_do_not_break_the_cli(zoo):
    proc = gentool("list", "--json", env=zoo)
    assert proc.returncode == 0, proc.stderr
    names = {m["name"]: m["plugin"] for m in json.loads(proc.stdout)}
    assert names["toy"] == "toy"  # plugins load in entry-point name order; the first registration wins
    assert names["greedy"] == "zz-greedy"
    for broken in ("broken-import", "broken-register", "bad-signature"):
        assert broken not in names.values()


def test_plugins_command_reports_failures_with_reasons(zoo):
    proc = gentool("plugins", "--json", env=zoo)
    assert proc.returncode == 0, proc.stderr
    info = {p["name"]: p for p in json.loads(proc.stdout)}
    assert info["toy"]["ok"] and info["toy"]["models"] == ["toy"] and "gentool_train" in info["toy"]["hooks"]
    assert info["toy"]["commands"] == ["toy-hello", "toy-tools"]
    assert not info["broken-import"]["ok"]
    assert "Error importing plugin 'broken-import'" in info["broken-import"]["error"]
    assert "this_module_does_not_exist" in info["broken-import"]["error"]
    assert not info["broken-register"]["ok"] and "cannot register today" in info["broken-register"]["error"]
    assert not info["bad-signature"]["ok"] and "something_unknown" in info["bad-signature"]["error"]
    assert info["zz-greedy"]["version"] == "9.9"
    problems = " ".join(info["zz-greedy"]["problems"])
    assert "'toy' is already provided by plugin 'toy'" in problems
    assert "command 'list' is already taken" in problems
    text = gentool("plugins", env=zoo).stdout
    assert "failed" in text and "cannot register today" in text


def test_core_command_cannot_be_hijacked(zoo):
    proc = gentool("list", env=zoo)
    assert "hijacked" not in proc.stdout


def test_routed_hooks_only_reach_the_owner(zoo):
    gentool("train", "toy", "--epochs", "1", "-q", env=zoo, check=True)
    proc = gentool("sample", "toy", "-n", "2", env=zoo)
    assert proc.returncode == 0, proc.stderr  # greedy's gentool_sample would raise if it were called
    proc = gentool("sample", "greedy", env=zoo)
    assert "no trained greedy" in proc.stderr
    proc = gentool("train", "broken", env=zoo)  # the unknown name may belong to a plugin that failed
    assert "failed to load: see `gentool plugins`" in proc.stderr and "broken-import" in proc.stderr


def test_registry_in_process_isolates_a_raising_plugin():
    from gentool.plugins import Registry

    class Bad:
        import gentool as _g

        @_g.hookimpl
        def gentool_register_models(self, register):
            raise ValueError("boom")

    reg = Registry()
    info = reg.add("bad", Bad())
    assert not info.ok and "boom" in info.error and reg.models == {}


def test_dataset_names_known_to_the_registry_match_the_data_package():
    from gentool.data import BUILTIN_DATASETS
    from gentool.plugins import _builtin_dataset_names

    assert set(BUILTIN_DATASETS) == _builtin_dataset_names()


def _hookspecs():
    from gentool import hookspecs

    return {n: f for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("gentool_")}


def test_every_hook_has_a_docstring_and_is_documented_with_its_signature():
    doc = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    specs = _hookspecs()
    assert {"gentool_register_models", "gentool_register_datasets", "gentool_register_commands",
            "gentool_train", "gentool_sample", "gentool_evaluate"} <= set(specs)
    for name, fn in specs.items():
        assert fn.__doc__ and len(fn.__doc__.split()) > 15, f"{name} needs a real docstring"
        args = ", ".join(inspect.signature(fn).parameters)
        assert re.search(rf"{name}\({re.escape(args)}\)", doc), f"docs/plugins.md must show {name}({args})"
