"""The plugin keeps gentool's plugin contract: facade imports only, hooks without a model-name
guard, typed sample/evaluate options, gentool.fit, say/warn instead of print, and a learning-rate
schedule over the harness's ``task.total_steps``."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from gpt_helpers import gentool

import gentool_gpt

PACKAGE = Path(gentool_gpt.__file__).resolve().parent
SOURCES = sorted(PACKAGE.glob("*.py"))


def _trees():
    assert len(SOURCES) > 10
    for path in SOURCES:
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def test_every_import_of_gentool_is_the_facade():
    """``import gentool`` / ``from gentool import X`` only, X a name the facade exports; never a
    core submodule (``gentool.checkpoint``...), which may move."""
    import gentool as facade

    exported = set(dir(facade))
    bad = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                bad += [f"{where} import {a.name}" for a in node.names if a.name.startswith("gentool.")]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("gentool."):
                    bad.append(f"{where} from {node.module} import ...")
                elif node.module == "gentool":
                    bad += [f"{where} from gentool import {a.name} (not exported)" for a in node.names
                            if a.name not in exported]
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == "gentool" and node.attr not in exported):
                bad.append(f"{where} gentool.{node.attr} (not exported)")
    assert not bad, bad


def test_no_print_in_the_plugin():
    """Progress and warnings go through gentool.say / gentool.warn (silent under -q, off rank 0);
    the chat verb writes to its own streams."""
    calls = [f"{path.name}:{node.lineno}" for path, tree in _trees() for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
    assert not calls, calls


def test_hooks_take_the_job_only_and_have_no_name_guard():
    from gentool_gpt import plugin

    for hook in (plugin.gentool_train, plugin.gentool_sample, plugin.gentool_evaluate):
        assert list(inspect.signature(hook).parameters) == ["job"], hook.__name__
    names = {n.id for n in ast.walk(ast.parse(inspect.getsource(plugin))) if isinstance(n, ast.Name)}
    assert "model" not in names  # the core routes gpt's calls here: nothing to compare


def test_sample_and_evaluate_options_are_typed_dataclasses_with_defaults_once():
    from gentool_gpt.configs import GPTEvaluateOptions, GPTSampleOptions
    from gentool_gpt.plugin import SPEC

    assert SPEC.sample_options is GPTSampleOptions and SPEC.evaluate_options is GPTEvaluateOptions
    sample = {f.name: f.default for f in dataclasses.fields(GPTSampleOptions)}
    assert sample == {"prompt": "", "max_tokens": 500, "temperature": 0.8, "top_k": None, "top_p": None,
                      "quantize": "none"}
    evaluate = {f.name: f.default for f in dataclasses.fields(GPTEvaluateOptions)}
    assert evaluate == {"max_tokens": 200, "temperature": 0.0, "conversations": 50}
    for cls in (GPTSampleOptions, GPTEvaluateOptions):
        assert all(f.metadata.get("help") for f in dataclasses.fields(cls))
    names = {n.id if isinstance(n, ast.Name) else n.attr for _, tree in _trees() for n in ast.walk(tree)
             if isinstance(n, (ast.Name, ast.Attribute))}
    assert "flag_value" not in names and "SAMPLE_OPTIONS" not in names  # no second set of defaults
    with pytest.raises(ValueError, match="--top-p"):
        GPTSampleOptions(top_p=1.5)
    with pytest.raises(ValueError, match="--conversations"):
        GPTEvaluateOptions(conversations=0)


def test_help_lists_the_typed_options(env):
    res = gentool("sample", "gpt", "-h", env=env)
    assert res.returncode == 0, res.stderr
    for flag in ("--prompt", "--max-tokens", "--temperature", "--top-k", "--top-p"):
        assert flag in res.stdout, flag
    assert "500" in res.stdout and "0.8" in res.stdout
    res = gentool("evaluate", "gpt", "-h", env=env)
    assert res.returncode == 0, res.stderr
    for flag in ("--max-tokens", "--temperature", "--conversations"):
        assert flag in res.stdout, flag


def _lr_task(tmp_path, epochs: int, iters: int):
    """A pretraining task built as the hook builds it, on a small text of our own."""
    from gentool_gpt.configs import GPTTrainConfig
    from gentool_gpt.task import pretrain_task

    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(300))
    cfg = GPTTrainConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, iters_per_epoch=iters, warmup_iters=2,
                         min_lr_ratio=0.1)
    job = SimpleNamespace(config=cfg, init_from=None, quiet=True, data=SimpleNamespace(text=text),
                          options=SimpleNamespace(lr=1e-2, epochs=epochs, precision="fp32", data=str(tmp_path / "x")))
    return pretrain_task(cfg, job)


def test_the_cosine_schedule_ends_at_the_harness_total_steps(tmp_path):
    """The harness sets task.total_steps (world-size aware) before the schedulers are made: the
    decay reaches lr * min_lr_ratio exactly there, whatever epochs * iters_per_epoch says."""
    task = _lr_task(tmp_path, epochs=5, iters=10)  # 50 steps by the epoch count
    task.total_steps = 20  # what the harness says (e.g. another world size)
    opt = task.configure_optimizers()
    sched = task.configure_schedulers(opt)["cosine"]
    lrs = []
    for _ in range(20):
        lrs.append(opt["adamw"].param_groups[0]["lr"])
        opt["adamw"].step()
        sched.step()
    assert math.isclose(opt["adamw"].param_groups[0]["lr"], 1e-2 * 0.1, rel_tol=1e-9)
    assert lrs[2] > lrs[10] > lrs[19] > 1e-3


def test_training_in_process_uses_gentool_fit_and_says_nothing_when_quiet(tmp_path, monkeypatch, capsys):
    import gentool as api

    monkeypatch.setenv("GENTOOL_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = api.train("gpt", epochs=1, batch_size=4, quiet=True, n_layer=1, n_head=2, n_embd=16, block_size=16,
                        iters_per_epoch=3, eval_tokens=256)
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning) and "fit" in str(w.message)]
    assert run.last is not None and run.step == 3
    quiet = capsys.readouterr()
    assert "gpt: " not in quiet.out + quiet.err  # the plugin's progress lines go through gentool.say
    assert "transformers export" not in quiet.out + quiet.err
    loud = api.train("gpt", epochs=1, batch_size=4, n_layer=1, n_head=2, n_embd=16, block_size=16,
                     iters_per_epoch=2, eval_tokens=256)
    said = capsys.readouterr()
    assert "gpt: " in said.out + said.err and "transformers export" in said.out + said.err and loud.step == 2
