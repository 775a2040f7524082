"""dbn, dbm and bm: what a user sees them do, on the embedded digits (and tiny versions of them).

Trained in-process through the real harness where the test needs to look inside (per-epoch
weights, the exact likelihood of a tiny model, an interrupted run), through the command line
where the user's path matters (files in the run folder, ``gentool sample`` and ``gentool evaluate
--json``). Long checks are marked slow (``--runslow`` or ``GENTOOL_RUNSLOW=1``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

import gentool
from gentool import load_checkpoint
from gentool.checkpoint import TRAIN_PREFIX, unpack_state  # test-only: looks inside the training state
from gentool.testing import invoke

CLI_TIMEOUT = 600


@pytest.fixture(autouse=True)
def _slow_and_threads(request):
    """Skip slow tests unless asked for: ``--runslow`` where the core's conftest is loaded too
    (``pytest tests plugins/boltzmann/tests --runslow``), else ``GENTOOL_RUNSLOW=1``. And train
    these small models on one thread: on a busy 2-core machine that is the faster choice."""
    runslow = request.config.getoption("--runslow", default=False) or os.environ.get("GENTOOL_RUNSLOW") == "1"
    if "slow" in request.node.keywords and not runslow:
        pytest.skip("slow: run with --runslow or GENTOOL_RUNSLOW=1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return {**os.environ, "GENTOOL_RUNS": str(tmp_path / "runs"), "GENTOOL_CACHE": str(tmp_path / "cache"),
            "GENTOOL_PLUGINS": "boltzmann", "OMP_NUM_THREADS": "1"}


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    """The real command line (in this process where a fresh interpreter would answer the same)."""
    return invoke(*args, env=env, timeout=CLI_TIMEOUT)


def evaluate_json(model: str, *args: str, env: dict) -> tuple[dict, dict]:
    """``gentool evaluate MODEL --json``: its metrics and settings."""
    res = cli("evaluate", model, "--json", *args, env=env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    return out["metrics"], out["settings"]


def make_job(model: str, root: Path, epochs: int, sets: dict | None = None, *, name: str = "run",
             image_size: int | None = None, batch_size: int = 20, lr: float = 0.05, resume: Path | None = None):
    """A TrainJob as ``gentool train`` builds it (seeded the same way), on the digits."""
    from gentool import TrainJob, TrainOptions, build_config, seed_everything
    from gentool.data.digits import load_digits
    from gentool.runs import Run
    from gentool_boltzmann import plugin

    spec = next(s for s in plugin.SPECS if s.name == model)
    cfg = build_config(spec.config, {"sample_steps": 20, **(sets or {})})
    options = TrainOptions(data="digits", epochs=epochs, batch_size=batch_size, lr=lr, image_size=image_size,
                           device="cpu", sample_count=8)
    seed_everything(options.seed)
    data = load_digits("train", image_size)
    return TrainJob(spec=spec, config=cfg, options=options, data=data, run=Run(model, name, root / model / name),
                    resume=resume, quiet=True)


def new_task(task_cls: type, job):
    return task_cls.from_job(job)


def epoch_records(run_dir: Path) -> list[dict]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["type"] == "epoch"]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_checkpoint(path).tensors().items() if not k.startswith(TRAIN_PREFIX)}


def check_samples(images: torch.Tensor, n: int, shape: tuple[int, ...]) -> None:
    assert images.shape == (n, *shape)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    assert images.std() > 0  # not one flat colour


# -- DBN -----------------------------------------------------------------------------------------
def test_dbn_trains_its_layers_one_after_the_other(tmp_path):
    from gentool_boltzmann.dbn import DBNTask

    class Recording(DBNTask):
        """Keeps a copy of every RBM after each epoch (instead of drawing pictures)."""

        def write_pictures(self, folder, epoch):
            self.snapshots.append([{k: v.clone() for k, v in r.state_dict().items()} for r in self.dbn.rbms])

    # thresholded digits: the margins below were set on them (the default draw adds pixel noise
    # that no layer can reconstruct)
    job = make_job("dbn", tmp_path, 4, {"layers": (64, 16), "binarize": "threshold"}, lr=0.2)
    task = new_task(Recording, job)
    task.snapshots = [[{k: v.clone() for k, v in r.state_dict().items()} for r in task.dbn.rbms]]
    before = task.validate()
    gentool.fit(task, job)

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    snaps = task.snapshots  # [initial, after epoch 1, ..., after epoch 4]
    # epochs 1-2 train the first RBM only, epochs 3-4 the second only
    assert not same(snaps[1][0], snaps[0][0]) and not same(snaps[2][0], snaps[1][0])
    assert same(snaps[2][1], snaps[0][1])
    assert not same(snaps[3][1], snaps[2][1]) and not same(snaps[4][1], snaps[3][1])
    assert same(snaps[4][0], snaps[2][0])
    epochs = epoch_records(job.run.dir)
    assert [e["train_layer"] for e in epochs] == [1, 1, 2, 2]
    # the first RBM learned: held-out digits are reconstructed better, their pseudo-likelihood rose
    assert epochs[1]["val_recon"] < before["val_recon"] - 0.5
    assert epochs[1]["val_pll"] > before["val_pll"] + 1
    assert epochs[3]["val_recon"] < epochs[2]["val_recon"]  # the second RBM learns its input too
    check_samples(task.sample(6, torch.Generator().manual_seed(0)), 6, (1, 8, 8))
    ckpt = load_checkpoint(job.run.last)
    assert {k.split(".")[0] for k in weights(ckpt.path)} == {"rbm0", "rbm1"}
    assert ckpt.extra["layers_trained"] == 2


def test_dbn_from_the_command_line(env, tmp_path):
    res = cli("train", "dbn", "--epochs", "4", "--set", "layers=64,32", "--set", "sample_steps=100",
                  "--batch-size", "20", "--lr", "0.1", "-q", env=env)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs/dbn/run1"
    for f in ("filters.png", "gibbs_chain.png", "gibbs_chain.gif", "samples/epoch_004.png", "last.safetensors"):
        assert (run / f).exists(), f
    res = cli("sample", "dbn", "-n", "5", "--out", "s", env=env)
    assert res.returncode == 0, res.stderr
    assert len(list((tmp_path / "s").glob("0*.png"))) == 5
    m, settings = evaluate_json("dbn", "--ais-runs", "20", "--ais-steps", "500", env=env)
    assert (m["ais_runs"], m["ais_steps"], settings["ais_method"], m["layers"]) == (20, 500, "ais", 2)
    assert settings["probe_features"].startswith("top hidden layer")
    assert -64 * math.log(2) < m["test_log_likelihood_lower_bound"] < 0  # better than a coin per pixel
    assert m["bound_low"] <= m["test_log_likelihood_lower_bound"]
    assert 0 < m["reconstruction_error"] < 64 and m["rbm0_pseudo_log_likelihood"] < 0
    assert 0.5 < m["linear_probe_accuracy"] <= 1
    res = cli("train", "dbn", "--epochs", "1", "-q", env=env)  # two layers need two epochs
    assert res.returncode == 1 and "--epochs >= 2" in res.stderr and "Traceback" not in res.stderr


def test_dbn_bound_is_withdrawn_when_ais_falls_below_the_floor(tmp_path, monkeypatch):
    """An AIS log Z_top under the data's certain floor would make the bound read too high (a
    50-epoch MNIST DBN once reported +150 nats, impossible for binary data): it is withdrawn."""
    from dataclasses import replace

    from gentool import EvaluateJob
    from gentool.data.digits import load_digits
    from gentool_boltzmann import ais, dbn
    from gentool_boltzmann.configs import EvaluateOptions
    from gentool_boltzmann.dbn import DBNTask

    job = make_job("dbn", tmp_path, 2, {"layers": (32, 16)}, lr=0.1)
    gentool.fit(new_task(DBNTask, job), job)
    ckpt = load_checkpoint(job.run.last)

    def evaluate() -> gentool.EvaluateResult:
        ev = EvaluateJob(spec=job.spec, checkpoint=ckpt, data=load_digits("test"), device=torch.device("cpu"),
                         seed=0, options=EvaluateOptions(ais_runs=10, ais_steps=200, probe=False),
                         data_loader=lambda split: load_digits(split))
        return dbn.evaluate(ev)

    result = evaluate()
    good = result.metrics
    assert good["ais_consistent"] and good["log_z_top"] >= good["log_z_floor"]
    assert good["test_log_likelihood_lower_bound"] < 0 and result.warnings == []
    assert result.settings == {"ais_method": "ais"}  # no probe: asked for none

    real = ais.rbm_ais
    monkeypatch.setattr(ais, "rbm_ais", lambda *a, **k: replace(
        real(*a, **k), log_z=good["log_z_floor"] - 50.0, log_z_low=math.nan, log_z_high=good["log_z_floor"] - 49.0))
    result = evaluate()
    bad = result.metrics
    assert not bad["ais_consistent"] and bad["test_log_likelihood_lower_bound"] is None
    assert bad["bound_low"] is None and bad["bound_high"] is None
    assert len(result.warnings) == 1 and "missed modes" in result.warnings[0]
    # the ceiling puts log Z_top at its floor: the same Monte Carlo terms as the honest bound, minus the floor
    assert bad["test_log_likelihood_lower_bound_at_most"] == pytest.approx(
        good["test_log_likelihood_lower_bound"] + good["log_z_top"] - good["log_z_floor"], abs=1e-6)


# -- DBM -----------------------------------------------------------------------------------------
def test_dbm_pretrains_then_trains_jointly_and_learns(tmp_path):
    from gentool_boltzmann.dbm import DBMTask

    job = make_job("dbm", tmp_path, 8, {"layers": (32, 32), "chains": 50}, lr=0.1)
    task = new_task(DBMTask, job)
    before = task.validate()
    gentool.fit(task, job)
    # the stages come from the steps the harness said the run takes: 8 epochs of 1295 // 20 = 64
    assert task.total_steps == 8 * 64
    pre = round(0.3 * task.total_steps)  # pretrain_fraction 0.3 of the steps, half per layer pair
    assert task.ends == [pre - pre // 2, pre]
    epochs = epoch_records(job.run.dir)
    assert epochs[0]["pretraining"] == 1 and epochs[-1]["pretraining"] == 0
    assert task.dbm.composed.item() == 1
    assert epochs[-1]["val_recon"] < before["val_recon"] - 1  # mean-field reconstructions got better
    assert [x.shape for x in task.chains] == [(50, 64), (50, 32), (50, 32)]
    check_samples(task.sample(6, torch.Generator().manual_seed(0)), 6, (1, 8, 8))


def test_dbm_from_the_command_line(env, tmp_path):
    res = cli("train", "dbm", "--epochs", "4", "--set", "layers=64,32", "--set", "sample_steps=100",
                  "--batch-size", "20", "--lr", "0.05", "-q", env=env)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs/dbm/run1"
    for f in ("filters.png", "gibbs_chain.png", "gibbs_chain.gif", "samples/epoch_004.png"):
        assert (run / f).exists(), f
    assert {k.split(".")[0] for k in weights(run / "last.safetensors")} == {"dbm", "pre1", "pre2"}
    res = cli("sample", "dbm", "-n", "4", "--out", "s", env=env)
    assert res.returncode == 0 and len(list((tmp_path / "s").glob("0*.png"))) == 4
    m, settings = evaluate_json("dbm", "--ais-runs", "20", "--ais-steps", "500", env=env)
    assert (m["ais_runs"], m["ais_steps"], settings["ais_method"]) == (20, 500, "ais")
    assert math.isfinite(m["test_log_likelihood_lower_bound"])
    assert -64 * math.log(2) < m["test_log_likelihood_lower_bound"] < 0
    assert "log_z_exact" not in m  # 64 + 32 even units, 64 odd: too many to enumerate
    assert 0 < m["reconstruction_error"] < 64 and 0.5 < m["linear_probe_accuracy"] <= 1


def test_dbm_bound_lies_below_the_exact_likelihood_of_a_tiny_dbm(env):
    """4x4 digits and two hidden layers of 6: small enough to enumerate."""
    res = cli("train", "dbm", "--epochs", "6", "--image-size", "4", "--set", "layers=6,6", "--set", "init_std=0.1",
                  "--set", "sample_steps=50", "--batch-size", "20", "--lr", "0.1", "-q", env=env)
    assert res.returncode == 0, res.stderr
    m, _ = evaluate_json("dbm", "--ais-runs", "100", "--ais-steps", "1000", "--probe", "false", env=env)
    assert abs(m["log_z"] - m["log_z_exact"]) < 0.1  # AIS agrees with enumeration
    assert m["ais_consistent"] and m["log_z_floor"] <= m["log_z_exact"]  # the data's floor holds
    exact, bound = m["test_log_likelihood_exact"], m["test_log_likelihood_lower_bound_exact_log_z"]
    assert bound <= exact + 1e-9 and exact - bound < 1  # a bound, and a reasonably tight one
    assert -16 * math.log(2) < exact < 0


def test_dbm_resume_restores_the_persistent_chains(tmp_path):
    """Stop a run in its joint phase, resume it: it ends exactly where an uninterrupted run does.
    Resuming without the saved chains would not (the test can tell the difference)."""
    from gentool.training import TrainingInterrupted
    from gentool_boltzmann.dbm import DBMTask

    sets = {"layers": (16, 16), "chains": 20}
    stop_at = 40  # 25 steps per epoch, pretraining ends at 22: mid epoch 2, joint phase

    class Stopped(DBMTask):
        def training_step(self, batch, ctx):
            if self.step == stop_at:
                raise KeyboardInterrupt  # what Ctrl-C does between two steps
            return super().training_step(batch, ctx)

    class Forgetful(DBMTask):
        def load_extra_state(self, state):
            super().load_extra_state({k: v for k, v in state.items() if k != "chains"})

    job = make_job("dbm", tmp_path, 3, sets, name="stopped", batch_size=50)
    with pytest.raises(TrainingInterrupted):
        gentool.fit(new_task(Stopped, job), job)
    saved = load_checkpoint(job.run.last)
    tensors = {k[len(TRAIN_PREFIX):]: v for k, v in saved.tensors(TRAIN_PREFIX).items()}
    state = unpack_state(saved.meta["train_state"], tensors)
    assert state["task"]["step"] == stop_at
    assert [tuple(c.shape) for c in state["task"]["chains"]] == [(20, 64), (20, 16), (20, 16)]
    interrupted = job.run.last.read_bytes()

    for cls, name in ((DBMTask, "stopped"), (Forgetful, "forgetful")):
        last = tmp_path / "dbm" / name / "last.safetensors"
        last.parent.mkdir(parents=True, exist_ok=True)
        last.write_bytes(interrupted)
        job = make_job("dbm", tmp_path, 3, sets, name=name, batch_size=50, resume=last)
        gentool.fit(new_task(cls, job), job)
    job = make_job("dbm", tmp_path, 3, sets, name="straight", batch_size=50)
    gentool.fit(new_task(DBMTask, job), job)

    straight = weights(tmp_path / "dbm/straight/last.safetensors")
    resumed = weights(tmp_path / "dbm/stopped/last.safetensors")
    forgetful = weights(tmp_path / "dbm/forgetful/last.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert not torch.equal(straight["dbm.W1"], forgetful["dbm.W1"])


# -- BM ------------------------------------------------------------------------------------------
def test_bm_stays_symmetric_and_its_exact_likelihood_rises(tmp_path):
    """4x4 digits, 4 hidden units: 2^20 states, enumerable."""
    from gentool_boltzmann import ais
    from gentool_boltzmann.bm import BMTask
    from gentool_boltzmann.common import flat

    job = make_job("bm", tmp_path, 3, {"hidden": 4, "chains": 50}, image_size=4)
    task = new_task(BMTask, job)
    v = flat(task.data.as_float()).double()

    def exact_ll() -> float:
        bm = task.bm
        params = tuple(t.detach().double() for t in (bm.L, bm.J, bm.b, bm.c, bm.W))
        return float((ais.bm_log_p_unnormalised(v, *params) - ais.bm_log_z_exact(*params)).mean())

    before = exact_ll()
    gentool.fit(task, job)
    after = exact_ll()
    assert after > before + 0.1, (before, after)  # nats per training image
    L, J = task.bm.L.detach(), task.bm.J.detach()
    for M in (L, J):
        assert torch.equal(M, M.T) and torch.all(M.diagonal() == 0)
    assert L.abs().max() > 0.05 and J.abs().max() > 0  # the lateral links did learn
    check_samples(task.sample(6, torch.Generator().manual_seed(0)), 6, (1, 4, 4))


def test_bm_from_the_command_line_says_what_is_exact(env, tmp_path):
    res = cli("train", "bm", "--epochs", "2", "--image-size", "4", "--set", "hidden=4", "--set", "sample_steps=50",
                  "-q", env=env)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs/bm/run1"
    for f in ("filters.png", "gibbs_chain.png", "gibbs_chain.gif", "samples/epoch_002.png", "best.safetensors"):
        assert (run / f).exists(), f
    res = cli("sample", "bm", "-n", "3", "--out", "s", env=env)
    assert res.returncode == 0 and len(list((tmp_path / "s").glob("0*.png"))) == 3
    m, settings = evaluate_json("bm", env=env)
    assert -16 * math.log(2) < m["test_log_likelihood_exact"] < 0 and math.isfinite(m["log_z_exact"])
    assert m["pseudo_log_likelihood_exact"] < 0 and m["pseudo_log_likelihood_mf"] < 0
    assert "exact" in settings["figures"] and "mean-field" in settings["figures"]
    res = cli("train", "bm", "--epochs", "1", "--set", "hidden=8", "--set", "sample_steps=10", "-q", env=env)
    assert res.returncode == 0, res.stderr
    m, settings = evaluate_json("bm", "--probe", "false", env=env)  # 64 + 8 units: no exact figures, and it says so
    assert "log_z_exact" not in m and "too many to enumerate" in settings["figures"]


# -- longer checks ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("model", ["dbn", "dbm"])
def test_training_raises_the_bound_on_held_out_digits(env, model):
    """The default layers (256, 256) at a small batch: ten epochs give a clearly better evaluated
    bound on held-out digits than two."""
    common = ["--batch-size", "20", "--lr", "0.05", "-q"]
    assert cli("train", model, "--epochs", "2", "--name", "short", "--set", "sample_steps=10",
                   *common, env=env).returncode == 0
    assert cli("train", model, "--epochs", "10", "--name", "long", *common, env=env).returncode == 0
    scores = {}
    for name in ("short", "long"):
        m, _ = evaluate_json(model, "-c", name, "--ais-runs", "50", "--ais-steps", "2000", "--probe", "false", env=env)
        scores[name] = m["test_log_likelihood_lower_bound"]
    assert scores["long"] > scores["short"] + 1, scores
