"""The Python API (gentool.train / load / Model.sample / Model.evaluate), in-process, and the
contract checks behind it: typed verb options, typed results, plugins that break the contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import gentool
from conftest import TOY_DIR, gentool as run_gentool


@pytest.fixture
def toy(toy_registry, workdir):
    """The toy plugin in this process, runs under a temporary folder."""
    return workdir


def test_train_load_sample_evaluate_in_process(toy):
    run = gentool.train("toy", epochs=2, seed=3, quiet=True, width=4)
    assert isinstance(run, gentool.TrainedRun) and run.step > 0 and run.epoch == 2
    assert run.dir == toy / "runs" / "toy" / "run1" and run.last.exists()
    m = run.load(device="cpu")
    assert m.name == "toy" and m.checkpoint.config["width"] == 4
    a, b, c = m.sample(6, seed=1), m.sample(6, seed=1), m.sample(6, seed=2)
    assert a.images.shape == (6, 1, 8, 8) and torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert not (toy / "samples").exists()  # the API returns samples; only save() writes them
    e = m.evaluate(n=64)
    assert isinstance(e, gentool.Evaluation) and e.split == "test" and e.metrics["n_data"] == 359
    assert e.settings["evaluated_split"] == "test" and e.saved == run.dir / "eval.json"
    assert json.loads((run.dir / "eval.json").read_text())["metrics"] == e.metrics


def test_load_takes_files_folders_run_names_and_model_slash_run(toy):
    run = gentool.train("toy", epochs=1, quiet=True, name="first")
    assert gentool.load(run.last, device="cpu").path == run.last
    for ref in (run.dir, "toy/first"):  # a run: its best checkpoint
        assert gentool.load(ref, device="cpu").path == run.best == run.checkpoint
    assert gentool.load("first", model="toy").path == run.best
    assert gentool.load(model="toy").path == run.best  # the newest run
    with pytest.raises(gentool.CheckpointError, match="checkpoint not found"):
        gentool.load("nosuch/run")


def test_same_errors_as_the_cli(toy):
    with pytest.raises(gentool.GentoolError, match="unknown model 'tyo'; did you mean toy"):
        gentool.train("tyo")
    with pytest.raises(gentool.ConfigError, match="unknown model option 'widht'; did you mean width"):
        gentool.train("toy", widht=3)
    with pytest.raises(gentool.ConfigError, match="positive integer"):
        gentool.train("toy", epochs=1, quiet=True).load().sample(0)


def test_train_takes_a_config_dict_and_options_mapping(toy):
    run = gentool.train("toy", config={"train": {"epochs": 1, "seed": 5}, "model": {"width": 3}},
                        options={"sleep": 0.0}, quiet=True)
    ckpt = gentool.load_checkpoint(run.last)
    assert ckpt.config["width"] == 3 and ckpt.meta["train"]["seed"] == 5 and ckpt.epoch == 1


def test_the_harness_tells_the_task_its_total_steps(toy):
    from gentool import Task, TrainJob, TrainOptions, fit
    from gentool.data import load_dataset
    from gentool.runs import new_run

    seen = {}
    data = load_dataset("digits")

    class Probe(Task):
        def __init__(self):
            self.data = data
            self.net = torch.nn.Linear(1, 1)

        def modules(self):
            return {"net": self.net}

        def configure_optimizers(self):
            seen.update(total=self.total_steps, world=self.world_size)
            return {}

        def training_step(self, batch, ctx):
            return {}

    spec = gentool.ModelSpec("probe", "test", "")
    fit(Probe(), TrainJob(spec, None, TrainOptions(epochs=3, batch_size=100), data, new_run("probe"), quiet=True))
    assert seen == {"total": 3 * (len(data) // 100), "world": 1}


# -- typed options ---------------------------------------------------------------------------------
TYPED = '''
from dataclasses import dataclass, field
import gentool

@dataclass
class Draw:
    label: int | None = field(default=None, metadata={"help": "Class to draw."})
    trunc: float = field(default=1.0, metadata={"help": "Truncation psi."})
    mix: bool = field(default=False, metadata={"help": "Style mixing."})

    def __post_init__(self):
        if not 0 <= self.trunc <= 1:
            raise ValueError("--trunc must lie in [0, 1]")

@gentool.hookimpl
def gentool_register_models(register):
    register(gentool.ModelSpec("typed", "test", "typed options", sample_options=Draw,
                               evaluate_options=gentool.NoOptions))

@gentool.hookimpl
def gentool_sample(model, job):
    import torch
    o = job.options
    assert isinstance(o, Draw)
    fill = o.trunc if not o.mix else 0.5
    return gentool.SampleResult(images=torch.full((job.n, 1, 2, 2), fill),
                                labels=torch.full((job.n,), o.label) if o.label is not None else None)
'''


def _checkpoint_for(model: str, folder):
    from gentool.checkpoint import save_checkpoint

    return save_checkpoint(folder / f"{model}.safetensors", {}, {"model": model, "data": {"shape": [1, 2, 2]}})


def test_typed_sample_options_are_parsed_checked_and_listed(gentool_env):
    gentool_env.add_plugin("typedplug", TYPED)
    path = _checkpoint_for("typed", gentool_env.dir)
    m = gentool.load(path, device="cpu")
    s = m.sample(3, trunc=0.25, label="2")  # "2" parsed to int as from the command line
    assert torch.all(s.images == 0.25) and s.labels.tolist() == [2, 2, 2]
    assert torch.all(m.sample(2, mix=True).images == 0.5)
    with pytest.raises(gentool.ConfigError, match="--trunc must lie in"):
        m.sample(2, trunc=3)
    with pytest.raises(gentool.ConfigError, match="unknown typed sample option '--trnc'; did you mean --trunc"):
        m.sample(2, trnc=0.5)
    res = gentool_env.run("sample", "typed", "-c", str(path), "-n", "2", "--trunc", "0.5", "--mix", "--out", "o")
    assert res.returncode == 0, res.stderr
    res = gentool_env.run("sample", "typed", "-h")
    assert res.returncode == 0 and "--trunc" in res.stdout and "Truncation psi." in res.stdout
    res = gentool_env.run("sample", "typed", "-c", str(path), "--label", "two")
    assert res.returncode == 1 and "bad value 'two' for --label" in res.stderr
    res = gentool_env.run("evaluate", "typed", "-c", str(path), "--anything", "1")
    assert res.returncode == 1 and "unknown typed evaluate option '--anything'" in res.stderr


# -- plugins that break the contract ------------------------------------------------------------------
BROKEN = '''
import gentool

@gentool.hookimpl
def gentool_register_models(register):
    register(gentool.ModelSpec("bare", "test", "returns a bare tensor"))

@gentool.hookimpl
def gentool_sample(model, job):
    import torch
    return torch.zeros(job.n, 1, 2, 2)

@gentool.hookimpl
def gentool_evaluate(model, job):
    import torch
    return {"fd": torch.tensor(1.0), "nested": {"a": 1}}
'''


def test_wrong_return_types_name_the_plugin(gentool_env):
    gentool_env.add_plugin("brokenplug", BROKEN)
    path = _checkpoint_for("bare", gentool_env.dir)
    res = gentool_env.run("sample", "bare", "-c", str(path))
    assert res.returncode == 1, res.stderr
    assert "plugin 'brokenplug' broke the sample contract for model 'bare': gentool_sample returned Tensor" \
        in res.stderr and "this is a bug" not in res.stderr
    res = gentool_env.run("evaluate", "bare", "-c", str(path), "--data", "digits")
    assert res.returncode == 1
    assert "plugin 'brokenplug' broke the evaluate contract" in res.stderr and "metric 'fd' is a Tensor" in res.stderr


HANDS_BACK = '''
import gentool

class Line(gentool.Task):
    def __init__(self, data):
        import torch
        self.data = data
        self.net = torch.nn.Linear(64, 1)

    def modules(self):
        return {"net": self.net}

    def configure_optimizers(self):
        import torch
        return {"sgd": torch.optim.SGD(self.net.parameters(), lr=0.01)}

    def training_step(self, batch, ctx):
        x, _ = batch
        loss = self.net(x.flatten(1)).pow(2).mean()
        ctx.step(loss, "sgd")
        return {"loss": loss}

@gentool.hookimpl
def gentool_register_models(register):
    register(gentool.ModelSpec("handback", "test", "a train hook that returns its task", default_data="digits",
                               epochs=2, batch_size=256))

@gentool.hookimpl
def gentool_train(model, job):
    return Line(job.data)
'''


def test_a_train_hook_may_return_its_task_and_the_core_fits_it(gentool_env):
    gentool_env.add_plugin("handbackplug", HANDS_BACK)
    run = gentool.train("handback", quiet=True)
    assert run.epoch == 2 and run.step > 0 and run.last is not None and run.last.exists()
    records = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2]  # trained by the harness


def test_legacy_evaluate_dict_becomes_metrics_settings_and_warnings():
    from gentool.engine import evaluation_result

    spec = gentool.ModelSpec("m", "f", "", plugin="p")
    r = evaluation_result({"fd": 1, "ok": True, "none": None, "features": "cnn", "warning": "careful"}, spec)
    assert r.metrics == {"fd": 1, "ok": True, "none": None} and r.settings == {"features": "cnn"}
    assert r.warnings == ["careful"]
    with pytest.raises(gentool.PluginError, match="metric 'nested' is a dict"):
        evaluation_result({"nested": {"a": 1}}, spec)
    with pytest.raises(gentool.PluginError, match="returned list"):
        evaluation_result([1, 2], spec)


MISSPELLED = '''
import gentool

@gentool.hookimpl
def gentool_register_models(register):
    register(gentool.ModelSpec("typo", "test", "a plugin with a misspelled hook"))

@gentool.hookimpl
def gentool_sampel(model, job):
    return None
'''


def test_misspelled_hook_fails_the_plugin_at_load_and_list_says_so(gentool_env):
    gentool_env.add_plugin("typoplug", MISSPELLED)
    res = gentool_env.run("plugins", "--json")
    info = {p["name"]: p for p in json.loads(res.stdout)}["typoplug"]
    assert not info["ok"] and "unknown hook gentool_sampel (did you mean gentool_sample?)" in info["error"]
    res = gentool_env.run("list")
    assert res.returncode == 0 and "typoplug failed to load, so its models are missing" in res.stderr


def test_hook_without_the_marker_is_reported():
    from gentool.plugins import Registry

    class Plugin:
        @gentool.hookimpl
        def gentool_register_models(self, register):
            register(gentool.ModelSpec("unmarked", "test", ""))

        def gentool_train(self, model, job):  # forgot @gentool.hookimpl
            return None

        def gentool_evalute(self, model, job):  # misspelled, and unmarked
            return None

        @gentool.hookimpl(specname="gentool_sample")  # another name for a real hook: fine
        def gentool_sample_v2(self, model, job):
            return None

        def gentool_plugin_version(self):  # a helper that merely starts like a hook: fine
            return "1"

    info = Registry().add("unmarked", Plugin())
    assert info.ok and info.problems == [
        "gentool_evalute looks like the hook gentool_evaluate but is neither that hook nor marked with "
        "@gentool.hookimpl: it is never called",
        "gentool_train is not marked with @gentool.hookimpl: it is never called"]


# -- reporting channel ----------------------------------------------------------------------------------
def test_say_is_silent_when_quiet_and_warn_is_recorded(capsys):
    from gentool.report import GentoolWarning, reporting

    with reporting(quiet=True) as report:
        gentool.say("progress")
        with pytest.warns(GentoolWarning, match="careful"):
            gentool.warn("careful")
    assert capsys.readouterr().err == "" and report.messages == ["progress"] and report.warnings == ["careful"]
    with reporting(quiet=False):
        gentool.say("shown")
    out = capsys.readouterr()
    assert out.err == "shown\n" and out.out == ""  # stdout stays for data (--json)
    with reporting(quiet=True) as outer:  # a plugin sampling another model while it trains
        with reporting(quiet=False) as inner, pytest.warns(GentoolWarning):
            gentool.say("inner progress")
            gentool.warn("inner warning")
    assert capsys.readouterr().err == "" and inner.quiet and outer.warnings == ["inner warning"]


# -- the facade -------------------------------------------------------------------------------------------
def test_every_facade_name_resolves_and_import_stays_light():
    for name in gentool._EXPORTS:
        assert getattr(gentool, name) is not None, name
    code = ("import sys, gentool\n"
            "from gentool import ModelSpec, NoOptions, hookimpl, say, warn, train, load\n"
            "from gentool import *\n"
            "assert 'torch' not in sys.modules, 'importing the facade loaded torch'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_builtin_plugins_import_only_the_facade():
    from gentool.testing import assert_imports_only_the_facade

    for package in ("gentool_gan", "gentool_boltzmann", "gentool_gpt", "gentool_vae"):
        module = pytest.importorskip(package)
        assert_imports_only_the_facade(module.__file__)


def test_facade_check_names_an_internal_import(tmp_path):
    from gentool.testing import assert_imports_only_the_facade

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import gentool\nfrom gentool import Task\nimport gentool.metrics\n")
    (pkg / "model.py").write_text("from gentool.training import Task\n")
    with pytest.raises(AssertionError, match=r"pkg/model.py:1: gentool.training"):
        assert_imports_only_the_facade(pkg / "__init__.py")
    (pkg / "model.py").write_text("from gentool import Task, training\n")  # the module, not a facade name
    with pytest.raises(AssertionError, match=r"pkg/model.py:1: gentool.training"):
        assert_imports_only_the_facade(pkg / "__init__.py")


# -- CLI behaviours the API gives -------------------------------------------------------------------------
def test_debug_is_accepted_after_the_verb(toy_env):
    res = run_gentool("train", "made", "--epochs", "1", "--debug", env=toy_env)
    assert res.returncode != 0 and "unknown model 'made'" in res.stderr and "Traceback" in res.stderr
    assert "unknown train option" not in res.stderr
    res = run_gentool("train", "made", "--epochs", "1", env=toy_env)
    assert res.stderr.strip().startswith("error: unknown model 'made'") and "Traceback" not in res.stderr


def test_resume_accepts_unchanged_options_and_names_a_changed_one(toy_env, workdir):
    run_gentool("train", "toy", "--epochs", "1", "--set", "width=4", "--lr", "0.01", "--name", "r", "-q",
                env=toy_env, check=True)
    res = run_gentool("train", "toy", "--resume", "r", "--epochs", "2", "--set", "width=4", "--lr", "0.01", "-q",
                      env=toy_env)
    assert res.returncode == 0, res.stderr
    res = run_gentool("train", "toy", "--resume", "r", "--epochs", "3", "--set", "width=5", env=toy_env)
    assert res.returncode == 1 and "model option width cannot change when resuming" in res.stderr
    assert "width=4, asked 5" in res.stderr
    res = run_gentool("train", "toy", "--resume", "r", "--epochs", "3", "--lr", "0.5", env=toy_env)
    assert res.returncode == 1 and "--lr cannot change when resuming (the run used 0.01" in res.stderr


def test_evaluate_without_a_test_split_uses_the_training_images_and_says_so(toy_env, workdir):
    from PIL import Image

    folder = workdir / "shapes"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(40):
            Image.new("L", (8, 8), color=40 * i % 255 if cls == "a" else 255 - 3 * i).save(folder / cls / f"{i}.png")
    run_gentool("train", "toy", "--data", str(folder), "--epochs", "1", "-q", env=toy_env, check=True)
    res = run_gentool("evaluate", "toy", "--json", "-n", "16", env=toy_env)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["split"] == "train" and doc["metrics"]["n_data"] == 80 and doc["settings"]["evaluated_split"] == "train"
    assert "has no test split" in doc["settings"]["split"] and "training images instead" in doc["warnings"][0]
    assert "warning: no test split in" in res.stderr
    res = run_gentool("evaluate", "toy", "--split", "test", env=toy_env)  # asked for explicitly: an error
    assert res.returncode == 1 and "no test split" in res.stderr


def test_evaluate_prints_the_result_when_it_cannot_keep_it(toy, monkeypatch):
    from gentool import io as gentool_io

    run = gentool.train("toy", epochs=1, quiet=True)

    def refuse(path, data):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(gentool_io, "write_atomic", refuse)
    with pytest.warns(gentool.GentoolWarning, match="could not save .*eval.json"):
        e = run.load().evaluate(n=16)
    assert e.metrics["n_data"] == 359 and e.saved is None and "could not save" in e.warnings[-1]


def test_finetuned_run_records_its_base_and_keeps_its_data(toy_env, workdir):
    from PIL import Image

    folder = workdir / "tiny"
    (folder / "x").mkdir(parents=True)
    for i in range(70):
        Image.new("L", (8, 8), color=i * 3).save(folder / "x" / f"{i}.png")
    run_gentool("train", "toy", "--data", str(folder), "--epochs", "1", "--name", "base", "-q", env=toy_env,
                check=True)
    res = run_gentool("train", "toy", "--resume", "base", "--tune", "v2", "--epochs", "1", "-q", env=toy_env)
    assert res.returncode == 0, res.stderr
    tuned = gentool.load_checkpoint(workdir / "runs/toy/run1/last.safetensors")
    assert tuned.meta["train"]["data"] == str(folder)  # not the model's default data (digits)
    base = tuned.meta["finetuned_from"]
    assert base["run"] == str(workdir / "runs/toy/base") and base["data"] == str(folder) and base["step"] > 0


@pytest.mark.parametrize("native", [False, True])
def test_bf16_warning_follows_the_cpus_capability(monkeypatch, native):
    from gentool import devices
    from gentool.report import GentoolWarning

    monkeypatch.setattr(devices, "cpu_bf16_support", lambda: (native, "AVX512" if native else "AVX2"))
    with __import__("warnings").catch_warnings(record=True) as caught:
        __import__("warnings").simplefilter("always")
        devices.check_precision("bf16", torch.device("cpu"), warn_slow=True)
        devices.check_precision("fp32", torch.device("cpu"), warn_slow=True)
    said = [str(w.message) for w in caught if issubclass(w.category, GentoolWarning)]
    assert said == ([] if native else ["this CPU has no bfloat16 instructions (torch uses its AVX2 kernels): "
                                       "--precision bf16 is emulated here and can be many times slower than fp32"])


def test_bf16_on_a_cpu_without_bf16_instructions_warns(toy_env):
    from gentool.devices import cpu_bf16_support

    native, capability = cpu_bf16_support()
    res = run_gentool("train", "toy", "--epochs", "1", "--precision", "bf16", "-q", env=toy_env)
    assert res.returncode == 0, res.stderr
    said = "no bfloat16 instructions" in res.stderr
    assert said == (not native), (native, capability, res.stderr)
    if said:
        assert capability in res.stderr


def test_threads_flag_is_applied_and_recorded(toy_env, workdir):
    run_gentool("train", "toy", "--epochs", "1", "--threads", "2", "--name", "t2", "-q", env=toy_env, check=True)
    assert gentool.load_checkpoint(workdir / "runs/toy/t2/last.safetensors").meta["train"]["threads"] == 2
    run_gentool("train", "toy", "--epochs", "1", "--name", "auto", "-q", env=toy_env, check=True)
    assert gentool.load_checkpoint(workdir / "runs/toy/auto/last.safetensors").meta["train"]["threads"] is None
    res = run_gentool("train", "toy", "--epochs", "1", env={**toy_env, "GENTOOL_THREADS": "many"})
    assert res.returncode == 1 and "GENTOOL_THREADS must be a positive integer" in res.stderr


def test_killed_mid_epoch_resumes_with_the_whole_epochs_mean(toy_env, workdir):
    """SIGKILL right after the step-8 checkpoint (22 steps an epoch), then --resume: the same tensors
    and the same per-epoch mean loss in metrics.jsonl as an uninterrupted run."""
    from gentool.testing import assert_mid_epoch_resume_is_exact

    assert_mid_epoch_resume_is_exact("toy", "--set", "random_batches=true", "-q", env=toy_env,
                                     runs=workdir / "runs", save_every=4, kill_at=8)


def test_api_leaves_the_callers_random_streams_and_threads_alone(toy):
    import random

    import numpy as np

    threads = torch.get_num_threads()
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    run = gentool.train("toy", epochs=1, quiet=True, threads=threads + 1)
    run.load().sample(2, seed=0)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("options, message", [
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"epochs": 1.5}, "bad value 1.5 for --epochs (int)"),
    ({"lr": "abc"}, "bad value 'abc' for --lr (float)"),
    ({"config": {"train": {"epochs": 0}}}, "epochs must be at least 1"),
])
def test_bad_training_options_are_one_line_errors_in_python_too(toy, options, message):
    with pytest.raises(gentool.ConfigError) as err:
        gentool.train("toy", quiet=True, **options)
    assert message in str(err.value)
    assert not (toy / "runs" / "toy").exists() or not list((toy / "runs" / "toy").iterdir())


def test_finetune_option_repeated_unchanged_resumes_and_keeps_the_base(toy):
    gentool.train("toy", epochs=1, quiet=True, name="base")
    tuned = gentool.train("toy", resume="base", tune="v1", epochs=1, quiet=True)  # a new run from base
    assert tuned.name == "run1"
    again = gentool.train("toy", resume="run1", tune="v1", epochs=2, quiet=True)  # the same tag: resume run1
    assert again.name == "run1" and again.epoch == 2
    meta = gentool.load_checkpoint(again.last).meta
    assert meta["finetuned_from"]["run"].endswith("base") and meta["config"]["tune"] == "v1"


def test_sample_and_evaluate_of_an_unknown_model_suggest_the_close_name(toy_env):
    for verb in ("sample", "evaluate"):
        res = run_gentool(verb, "tyo", env=toy_env)
        assert res.returncode == 1 and "unknown model 'tyo'; did you mean toy?" in res.stderr


def test_debug_does_not_stick_between_invocations_in_one_process(toy_registry):
    from typer.testing import CliRunner

    from gentool.cli import main

    with pytest.raises(gentool.GentoolError):
        main(["train", "nosuch", "--debug"])  # --debug: the error propagates with its traceback
    res = CliRunner().invoke(__import__("gentool.cli", fromlist=["app"]).app, ["train", "nosuch"])
    assert res.exit_code == 1 and "unknown model 'nosuch'" in res.stderr


def test_evaluate_on_other_held_out_images_without_splits_scores_them_all(toy_env, workdir):
    from PIL import Image

    folder = workdir / "held"
    (folder / "x").mkdir(parents=True)
    for i in range(12):
        Image.new("L", (8, 8), color=20 * i).save(folder / "x" / f"{i}.png")
    run_gentool("train", "toy", "--epochs", "1", "-q", env=toy_env, check=True)
    res = run_gentool("evaluate", "toy", "--data", str(folder), "--json", "-n", "8", env=toy_env)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["split"] == "all" and doc["metrics"]["n_data"] == 12 and doc["warnings"] == []


CONSUMER = '''
import gentool

@gentool.hookimpl
def gentool_register_models(register):
    register(gentool.ModelSpec("consumer", "test", "samples another plugin's checkpoint, as the detector will"))

@gentool.hookimpl
def gentool_sample(model, job):
    source = job.checkpoint.meta["source"]
    gentool.say("drawing from " + source)
    other = gentool.load(source, device="cpu")     # routed to that checkpoint's own plugin
    drawn = other.sample(job.n, seed=job.seed)
    return gentool.SampleResult(images=1.0 - drawn.images)
'''


def test_a_plugin_samples_another_plugins_checkpoint_through_the_api(gentool_env):
    """No plugin imports another: the consumer names a toy checkpoint and the core routes to toy."""
    import os

    from gentool.checkpoint import save_checkpoint

    gentool_env.add_plugin("consumerplug", CONSUMER)
    gentool_env.env["PYTHONPATH"] = os.pathsep.join([str(TOY_DIR), gentool_env.env["PYTHONPATH"]])
    from gentool.testing import make_dist

    make_dist(gentool_env.dir / "plugins_site", "gentool-toy", {"toy": "gentool_toy"})
    gentool_env.env["GENTOOL_PLUGINS"] = "consumerplug,toy"
    res = gentool_env.run("train", "toy", "--epochs", "1", "-q", check=True)
    toy_ckpt = gentool_env.runs / "toy" / "run1" / "last.safetensors"
    path = save_checkpoint(gentool_env.dir / "consumer.safetensors", {},
                           {"model": "consumer", "source": str(toy_ckpt), "data": {"shape": [1, 8, 8]}})
    res = gentool_env.run("sample", "consumer", "-c", str(path), "-n", "4", "--seed", "3", "--out", "c")
    assert res.returncode == 0, res.stderr
    res = gentool_env.run("sample", "toy", "-c", str(toy_ckpt), "-n", "4", "--seed", "3", "--out", "t")
    assert res.returncode == 0, res.stderr
    import numpy as np
    from PIL import Image

    mine = np.asarray(Image.open(gentool_env.dir / "c" / "000000.png"), dtype=np.int16)
    theirs = np.asarray(Image.open(gentool_env.dir / "t" / "000000.png"), dtype=np.int16)
    assert np.abs(mine + theirs - 255).max() <= 1  # the consumer's image is the toy's, inverted


def test_a_relative_data_path_is_recorded_absolute(toy_env, workdir):
    """So evaluate, resume and fine-tuning find the data from any working folder."""
    from PIL import Image

    (workdir / "imgs" / "a").mkdir(parents=True)
    for i in range(70):
        Image.new("L", (8, 8), color=3 * i).save(workdir / "imgs" / "a" / f"{i}.png")
    run_gentool("train", "toy", "--data", "imgs", "--epochs", "1", "-q", env=toy_env, cwd=workdir, check=True)
    ckpt = gentool.load_checkpoint(workdir / "runs/toy/run1/last.safetensors")
    assert ckpt.meta["train"]["data"] == str(workdir / "imgs") == ckpt.data["name"]
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    res = run_gentool("evaluate", "toy", "--json", "-n", "8", env=toy_env, cwd=elsewhere)
    assert res.returncode == 0 and json.loads(res.stdout)["metrics"]["n_data"] == 70, res.stderr
    res = run_gentool("train", "toy", "--resume", "run1", "--data", "imgs", "--epochs", "2", "-q", env=toy_env,
                      cwd=workdir)  # the same folder, named relatively: accepted
    assert res.returncode == 0, res.stderr


def test_busy_machine_note_only_for_a_person_at_a_terminal(monkeypatch):
    import os
    import sys

    from gentool.devices import busy_machine_note

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("GENTOOL_THREADS", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # a 2-core machine, whatever runs the test
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert "--threads 1" in busy_machine_note(None)
    assert busy_machine_note(2) is None  # a count was chosen
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert busy_machine_note(None) is None  # logs and pipes: scripts read stderr unchanged


def test_discriminate_is_refused_for_a_model_without_the_hook(toy):
    m = gentool.train("toy", epochs=1, quiet=True).load()
    with pytest.raises(gentool.ConfigError, match="toy has no discriminator to score images with"):
        m.discriminate(torch.rand(2, 1, 8, 8))
