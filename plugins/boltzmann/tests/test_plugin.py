"""The plugin keeps the core's contract: the facade only, a torch-free entry point, typed flags."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gentool_boltzmann"


def gentool_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of gentool or a module under it in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "gentool"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "gentool":
                found.append((node.lineno, node.module))
    return found


def test_every_module_imports_gentool_through_its_facade_only():
    files = sorted(PACKAGE.glob("*.py"))
    assert {p.name for p in files} >= {"plugin.py", "rbm.py", "dbn.py", "dbm.py", "bm.py", "evaluation.py"}
    seen, internal = 0, []
    for path in files:
        for line, module in gentool_imports(path):
            seen += 1
            if module != "gentool":
                internal.append(f"{path.name}:{line} imports {module}")
    assert seen and not internal, internal


def test_the_entry_point_module_does_not_import_torch():
    code = ("import sys, gentool_boltzmann.plugin as p; "
            "reg = []; p.gentool_register_models(reg.append); "
            "assert len(reg) == 4 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_evaluate_options_are_typed_with_defaults_written_once():
    from gentool import ConfigError, build_config
    from gentool_boltzmann.configs import EvaluateOptions, SampleOptions

    o = build_config(EvaluateOptions, {}, where="rbm evaluate", flags=True)
    assert (o.ais_runs, o.ais_steps, o.probe, o.max_test) == (100, 14500, True, None)
    o = build_config(EvaluateOptions, {"ais_runs": "30", "probe": "false", "max_test": "500"}, flags=True)
    assert (o.ais_runs, o.probe, o.max_test) == (30, False, 500)
    for key, value in (("ais_runs", "1"), ("ais_steps", "9"), ("max_test", "0"), ("probe", "maybe")):
        with pytest.raises(ConfigError, match=key.replace("_", "-")):
            build_config(EvaluateOptions, {key: value}, where="rbm evaluate", flags=True)
    with pytest.raises(ConfigError, match="did you mean --ais-steps"):
        build_config(EvaluateOptions, {"ais_step": "100"}, where="rbm evaluate", flags=True)
    with pytest.raises(ConfigError, match="--steps"):
        build_config(SampleOptions, {"steps": "5"}, where="rbm sample", flags=True)
