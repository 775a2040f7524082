"""Losses, the gradient penalty, the EMA generator and best-checkpoint keeping, in-process."""

from __future__ import annotations

import json

import pytest
import torch
from gan_testing import gentool

from gentool import distributed
from gentool.training import StepContext


def digits_subset(n: int = 256):
    from gentool.data import load_dataset

    return load_dataset("digits", split="train").subset(slice(0, n))


def one_step(model: str, **cfg_values):
    """A GANTask on 256 digits after one training step, and the generator weights before it."""
    from gentool.config import build_config
    from gentool_gan.task import CONFIGS, GANTask

    torch.manual_seed(0)
    cfg = build_config(CONFIGS[model], {"val_samples": 0, **cfg_values})
    task = GANTask(model, cfg, digits_subset(), lr=1e-3)
    ctx = StepContext(torch.device("cpu"), "fp32", distributed.launched_world(), task.configure_optimizers())
    before = [p.detach().clone() for p in task.g.parameters()]
    d_before = [p.detach().clone() for p in task.d.parameters()]
    out = task.training_step(next(iter(task.batches(0, 32, 0, 1, 0))), ctx)
    return task, out, before, d_before


@pytest.mark.parametrize("loss", ["ns", "hinge", "lsgan", "wgan-gp"])
@pytest.mark.parametrize("model", ["gan", "cgan", "dcgan"])
def test_every_loss_takes_a_step(model, loss):
    task, out, g_before, d_before = one_step(model, loss=loss)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in out.values())
    assert {"d_loss", "g_loss"} <= set(out) and (("gp" in out) == (loss == "wgan-gp"))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, task.g.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, task.d.parameters()))


def test_spectral_norm_and_n_critic():
    task, out, g_before, _ = one_step("dcgan", spectral_norm=True, n_critic=2, loss="hinge")
    assert any("parametrizations" in name for name, _ in task.d.named_parameters())
    assert "g_loss" in out  # step 0 updates G
    ctx = StepContext(torch.device("cpu"), "fp32", distributed.launched_world(), task.configure_optimizers())
    ctx.step_count = 1
    g_now = [p.detach().clone() for p in task.g.parameters()]
    out = task.training_step(next(iter(task.batches(0, 32, 0, 1, 0))), ctx)
    assert "g_loss" not in out and all(torch.equal(a, b) for a, b in zip(g_now, task.g.parameters()))


def test_losses_have_their_textbook_values():
    from gentool_gan import losses

    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 0.5])
    sp = torch.nn.functional.softplus
    assert torch.isclose(losses.d_loss("ns", real, fake), sp(-real).mean() + sp(fake).mean())
    assert torch.isclose(losses.d_loss("hinge", real, fake), torch.tensor((0 + 1) / 2 + (0 + 1.5) / 2))
    assert torch.isclose(losses.d_loss("lsgan", real, fake), torch.tensor(0.5 * ((1 + 1) / 2 + (1 + 0.25) / 2)))
    assert torch.isclose(losses.d_loss("wgan-gp", real, fake), torch.tensor(-0.25 - 1.0))
    assert torch.isclose(losses.g_loss("ns", fake), sp(-fake).mean())
    assert torch.isclose(losses.g_loss("hinge", fake), torch.tensor(0.25))


def test_gradient_penalty_of_a_linear_critic_is_exact():
    """For D(x) = w.x the gradient is w at every point, so the penalty is (|w| - 1)^2."""
    from gentool_gan.losses import gradient_penalty

    torch.manual_seed(0)
    w = torch.tensor([3.0, 4.0, 0.0, 0.0]).view(1, 1, 2, 2)  # |w| = 5
    critic = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731
    real, fake = torch.randn(8, 1, 2, 2), torch.randn(8, 1, 2, 2)
    assert torch.isclose(gradient_penalty(critic, real, fake), torch.tensor(16.0))
    unit = lambda x: (x * w / 5).flatten(1).sum(1)  # noqa: E731
    assert gradient_penalty(unit, real, fake).abs() < 1e-10
    # quadratic critic D(x) = |x|^2 / 2: grad = x_hat, so at eps = 1 the points are the real ones
    quad = lambda x: 0.5 * x.flatten(1).pow(2).sum(1)  # noqa: E731
    expected = (real.flatten(1).norm(dim=1) - 1).pow(2).mean()
    assert torch.isclose(gradient_penalty(quad, real, fake, eps=torch.ones(8)), expected)


def test_ema_generator_differs_from_g_and_is_what_sampling_uses(env, tmp_path):
    import numpy as np
    from PIL import Image

    from gentool.checkpoint import load_checkpoint
    from gentool.config import config_from_dict
    from gentool_gan.task import CONFIGS, generate, make_networks

    res = gentool("train", "gan", "--epochs", "2", "--set", "val_samples=0", "-q", env=env)
    assert res.returncode == 0, res.stderr
    ckpt = load_checkpoint(tmp_path / "runs/gan/run1/last.safetensors", model="gan")
    g, ema = ckpt.state_dict("g"), ckpt.state_dict("g_ema")
    assert g.keys() == ema.keys() and any(not torch.equal(g[k], ema[k]) for k in g if k.endswith("weight"))
    res = gentool("sample", "gan", "-n", "4", "--seed", "3", "--out", "s", env=env)
    assert res.returncode == 0, res.stderr
    written = np.stack([np.asarray(Image.open(tmp_path / "s" / f"{i:06d}.png")) for i in range(4)])
    cfg = config_from_dict(CONFIGS["gan"], ckpt.config)
    shape = tuple(ckpt.data["shape"])

    def drawn(module: str) -> np.ndarray:
        net, _ = make_networks("gan", shape, None, cfg)
        ckpt.load_into({module: net})
        x = generate(net, 4, torch.Generator().manual_seed(3), torch.device("cpu"), cfg.z_dim)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()

    assert np.array_equal(written, drawn("g_ema"))
    assert not np.array_equal(written, drawn("g"))


def test_best_checkpoint_keeps_the_better_epoch(tmp_path, monkeypatch, cache_dir):
    """A run whose quality collapses after epoch 3 (the EMA generator's weights are zeroed, so it
    draws flat grey images): the Fréchet distance rises, best.safetensors keeps the best of the
    first three epochs, last.safetensors has the worse weights."""
    monkeypatch.setenv("GENTOOL_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("GENTOOL_CACHE", str(cache_dir))
    from gentool.api import TrainJob, TrainOptions
    from gentool.checkpoint import load_checkpoint
    from gentool.config import build_config
    from gentool.runs import new_run
    from gentool_gan.plugin import SPECS
    from gentool_gan.task import CONFIGS, GANTask

    class Collapsing(GANTask):
        def training_step(self, batch, ctx):
            out = super().training_step(batch, ctx)
            if ctx.epoch >= 3:  # from the fourth epoch on, wreck what sampling uses
                with torch.no_grad():
                    for p in self.g_ema.parameters():
                        p.zero_()
            return out

    from gentool.data import load_dataset

    data = load_dataset("digits", split="train")
    cfg = build_config(CONFIGS["cgan"], {"val_samples": 1000})
    spec = next(s for s in SPECS if s.name == "cgan")
    opts = TrainOptions(data="digits", epochs=5, batch_size=32, lr=2e-4, sample_count=16)
    job = TrainJob(spec=spec, config=cfg, options=opts, data=data, run=new_run("cgan"), quiet=True)
    from gentool import fit

    result = fit(Collapsing("cgan", cfg, data, opts.lr), job)
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    fd = {r["epoch"]: r["fd"] for r in records if r["type"] == "epoch"}
    assert min(fd[4], fd[5]) > min(fd[1], fd[2], fd[3]), fd
    best, last = load_checkpoint(result.best), load_checkpoint(result.last)
    assert best.epoch == min(fd, key=fd.get) <= 3 and best.meta["monitor"] == "fd"
    assert best.metrics["fd"] == min(fd.values()) and last.epoch == 5 and last.metrics["fd"] > best.metrics["fd"]
    assert not torch.equal(best.state_dict("g_ema")["net.0.weight"], last.state_dict("g_ema")["net.0.weight"])


def test_batch_spread_feature_sees_a_collapsed_batch():
    from gentool_gan.gan import with_batch_spread

    same = torch.ones(8, 5)
    varied = torch.randn(8, 5)
    assert with_batch_spread(same)[:, -1].abs().max() == 0
    assert with_batch_spread(varied)[:, -1].min() > 0.1
    task, out, g_before, _ = one_step("cgan", mbstd=True, conditioning="concat")
    assert all(torch.isfinite(torch.as_tensor(v)) for v in out.values())


def test_ema_generator_batch_norm_statistics_are_recalibrated_to_its_own_activations():
    """EMA weights with the raw generator's copied running statistics sample in eval mode from the
    wrong statistics; after recalibration, eval-mode output matches the train-mode (batch
    statistics) output of a large batch, and the global RNG is left alone."""
    from gentool.config import build_config
    from gentool_gan.configs import DCGANConfig
    from gentool_gan.dcgan import build
    from gentool_gan.task import recalibrate_batch_norm

    torch.manual_seed(0)
    g, _ = build((3, 16, 16), None, build_config(DCGANConfig, {"g_width": 8, "z_dim": 16}))
    with torch.no_grad():  # statistics that belong to other weights, as after an EMA update
        for m in g.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0.0, 3.0)
                m.running_var.uniform_(0.01, 0.1)
    g.eval()
    z = torch.randn(4096, 16)

    def gap() -> float:
        with torch.no_grad():
            g.eval()
            evaluated = g(z)
            g.train()
            batch_stats = g(z)
            g.eval()
        return float((evaluated - batch_stats).abs().mean())

    before = gap()
    state = torch.get_rng_state()
    assert recalibrate_batch_norm(g, 16, torch.device("cpu"), n=4096, batch=512)
    assert torch.equal(state, torch.get_rng_state())
    assert not g.training
    after = gap()
    assert before > 0.1 and after < 0.02, (before, after)

    class NoNorm(torch.nn.Module):
        def forward(self, z, y=None):
            return z

    assert not recalibrate_batch_norm(NoNorm(), 16, torch.device("cpu"))
