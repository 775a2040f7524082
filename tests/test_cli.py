"""The command line, through a real subprocess and through Typer's runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import gentool

runner = CliRunner()


def test_help_lists_core_and_plugin_commands(toy_env):
    proc = gentool("--help", env=toy_env)
    assert proc.returncode == 0, proc.stderr
    for verb in ("list", "plugins", "train", "sample", "evaluate", "info", "push", "pull", "toy-hello"):
        assert verb in proc.stdout


def test_every_verb_takes_dash_h(toy_env):
    """-h is --help for every verb: the core's and every installed plugin's (detect, upscale, ...)."""
    from gentool import cli

    for verb in sorted(cli.CORE_COMMANDS) + ["detect", "upscale", "translate", "chat", "toy-hello"]:
        proc = gentool(verb, "-h", env={**toy_env, "GENTOOL_PLUGINS": "toy,gan,detect,gpt"})
        assert proc.returncode == 0 and f"gentool {verb}" in proc.stdout, (verb, proc.stdout[-300:], proc.stderr)
    proc = gentool("-h", env=toy_env)
    assert proc.returncode == 0 and "train" in proc.stdout


def test_version():
    import gentool as g

    proc = gentool("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"gentool {g.__version__}"


def test_plugin_verb_runs(toy_env):
    proc = gentool("toy-hello", "tester", env=toy_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hello tester from toy"
    proc = gentool("toy-tools", "ping", env=toy_env)  # a group of verbs (app.add_typer)
    assert proc.returncode == 0 and proc.stdout.strip() == "pong"


def test_list_json_through_installed_entry_point(workdir):
    """The example VAE plugin is installed (pip install -e examples/gentool-vae): found by its entry point."""
    env = {k: v for k, v in os.environ.items() if k != "GENTOOL_PLUGINS"}
    proc = gentool("list", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    models = {m["name"]: m for m in json.loads(proc.stdout)}
    assert models["vae"]["plugin"] == "vae" and models["vae"]["family"] == "autoencoder"


def test_gentool_plugins_env_restricts_loading(toy_env):
    proc = gentool("list", "--json", env={**toy_env, "GENTOOL_PLUGINS": "toy"})
    assert [m["name"] for m in json.loads(proc.stdout)] == ["toy"]
    proc = gentool("list", "--json", env={**toy_env, "GENTOOL_PLUGINS": ""})
    assert json.loads(proc.stdout) == []
    proc = gentool("plugins", "--json", env={**toy_env, "GENTOOL_PLUGINS": "toy,nosuch"})
    info = {p["name"]: p for p in json.loads(proc.stdout)}
    assert info["toy"]["ok"] and not info["nosuch"]["ok"] and "not installed" in info["nosuch"]["error"]


def test_unknown_model_suggests_closest(toy_env):
    proc = gentool("train", "tyo", env=toy_env)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: unknown model 'tyo'; did you mean toy?"
    assert "Traceback" not in proc.stderr


def test_train_help_shows_model_options(toy_env):
    proc = gentool("train", "toy", "--help", env=toy_env)
    assert proc.returncode == 0
    for text in ("--epochs", "--resume", "nan_at_step", "Noise dimension."):
        assert text in proc.stdout


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_sample_and_evaluate_help_needs_no_checkpoint(toy_env, command):
    """-h works as for train, before any checkpoint is looked for (there is none here)."""
    proc = gentool(command, "toy", "-h", env=toy_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: gentool " + command) and "gentool train MODEL -h" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--set", "widht=3"], "unknown model option 'widht'; did you mean width?"),
    (["--set", "width=three"], "bad value 'three' for width (int)"),
    (["--set", "width"], "--set expects key=value"),
    (["--precision", "fp8"], "unknown precision 'fp8'"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--data", "mnsit"], "did you mean 'mnist'"),
    (["--data", "/no/such/folder"], "/no/such/folder"),
])
def test_bad_options_give_one_line(toy_registry, args, message):
    """In-process (the CLI's app under Typer's runner): one line on stderr, exit 1, no traceback."""
    from gentool.cli import app

    result = runner.invoke(app, ["train", "toy", *args])
    assert result.exit_code != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_train_flag_names_the_close_one(toy_env):
    proc = gentool("train", "toy", "--epoch", "3", env=toy_env)
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: unknown train option '--epoch'; did you mean --epochs?"


def test_finetune_option_with_resume_starts_a_new_run_from_its_weights(toy_env):
    import torch

    from gentool.checkpoint import load_checkpoint

    runs = Path(toy_env["GENTOOL_RUNS"]) / "toy"
    assert gentool("train", "toy", "--epochs", "1", "-q", env=toy_env).returncode == 0
    # a fine-tune flag alone with --resume: a new run, its config changed, weights taken from run1
    # (lr 0 leaves them as loaded, so they must equal run1's exactly)
    proc = gentool("train", "toy", "--resume", "run1", "--tune", "chat", "--epochs", "1", "--lr", "0", env=toy_env)
    assert proc.returncode == 0, proc.stderr
    assert "fine-tuning from" in proc.stderr and "run2" in proc.stderr  # messages on stderr, data on stdout
    base, tuned = load_checkpoint(runs / "run1" / "last.safetensors"), load_checkpoint(runs / "run2" / "last.safetensors")
    assert tuned.config["tune"] == "chat" and base.config["tune"] == ""
    assert tuned.meta["step"] == base.meta["step"]  # a fresh count, not a continuation
    a, b = base.state_dict("net"), tuned.state_dict("net")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # other model options still cannot change on a plain resume
    proc = gentool("train", "toy", "--resume", "run1", "--set", "width=3", env=toy_env)
    assert proc.returncode != 0 and "cannot change when resuming" in proc.stderr
    # a fine-tune flag without --resume is an ordinary option
    assert gentool("train", "toy", "--tune", "x", "--epochs", "1", "-q", env=toy_env).returncode == 0
    assert load_checkpoint(runs / "run3" / "last.safetensors").config["tune"] == "x"


def test_sample_without_a_run_says_how_to_get_one(toy_env):
    proc = gentool("sample", "toy", env=toy_env)
    assert proc.returncode == 1
    assert "gentool train toy" in proc.stderr and "gentool pull" in proc.stderr


def test_config_file_and_runner(workdir, toy_registry):
    from gentool.cli import app

    cfg = workdir / "toy.toml"
    cfg.write_text("[train]\nepochs = 1\nbatch_size = 128\n[model]\nwidth = 3\n")
    result = runner.invoke(app, ["train", "toy", "--config", str(cfg), "-q", "--name", "fromtoml"])
    assert result.exit_code == 0, result.output
    from gentool.checkpoint import load_checkpoint

    ckpt = load_checkpoint(workdir / "runs/toy/fromtoml/last.safetensors", model="toy")
    assert ckpt.config["width"] == 3 and ckpt.meta["train"]["batch_size"] == 128 and ckpt.epoch == 1
    assert ckpt.step == 1438 // 128  # digits train split: 1438 images, full batches only
    # the flags win over the file
    result = runner.invoke(app, ["train", "toy", "--config", str(cfg), "--batch-size", "64", "-q"])
    assert result.exit_code == 0
    assert load_checkpoint(workdir / "runs/toy/run1/last.safetensors").meta["train"]["batch_size"] == 64
    bad = workdir / "bad.toml"
    bad.write_text("[model]\nwidth = 'x'\n")
    result = runner.invoke(app, ["train", "toy", "--config", str(bad)])
    assert result.exit_code == 1 and "bad value 'x' for width" in result.output


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["plugins"], ["train", "--help"]])
def test_fast_commands_do_not_import_torch(toy_env, argv):
    toy_env = {k: v for k, v in toy_env.items() if k != "GENTOOL_PLUGINS"}  # every installed plugin loads
    code = ("import sys; from gentool.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'numpy', 'safetensors', 'PIL', 'matplotlib') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], env=toy_env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_sample_passes_model_flags_and_exports_a_loadable_dataset(workdir, toy_registry):
    from gentool.cli import app
    from gentool.data import load_dataset

    assert runner.invoke(app, ["train", "toy", "--epochs", "1", "-q"]).exit_code == 0
    res = runner.invoke(app, ["sample", "toy", "-n", "20", "--label", "all", "--as-dataset", "--out", "ds"])
    assert res.exit_code == 0, res.output
    back = load_dataset(str(workdir / "ds"))
    assert back.class_names == [str(i) for i in range(10)] and len(back) == 20
    assert sorted(back.labels.tolist()) == sorted(i % 10 for i in range(20))
    res = runner.invoke(app, ["sample", "toy", "-n", "3", "--label=7", "--out", "seven"])
    assert res.exit_code == 0 and sorted(p.name for p in (workdir / "seven").glob("0*.png"))[0] == "000000_7.png"
    res = runner.invoke(app, ["sample", "toy", "--colour", "red"])
    assert res.exit_code == 1 and "does not know the sampling option(s) colour" in res.output
    res = runner.invoke(app, ["sample", "toy", "stray"])
    assert res.exit_code == 1 and "unexpected argument 'stray'" in res.output
