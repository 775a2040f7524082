"""The rbm's training recipe: the binarisation, the k and momentum schedules, the update formula.

Each test checks what the option does to the training, not only that it parses: a schedule that
is stored but never read, or a momentum that the optimizer never sees, fails here.
"""

from __future__ import annotations

import json

import pytest
import torch

import gentool
from gentool import ConfigError, StepContext, build_config
from gentool.data import ImageDataset
from gentool.distributed import World

from gentool_boltzmann import rbm as rbm_module
from gentool_boltzmann.common import binarized
from gentool_boltzmann.configs import RBMConfig


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("GENTOOL_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("GENTOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GENTOOL_PLUGINS", "boltzmann")
    return tmp_path / "runs"


def grey(n: int = 40, side: int = 6, level: int = 128) -> ImageDataset:
    return ImageDataset(torch.full((n, 1, side, side), level, dtype=torch.uint8), None, None, "grey")


def test_the_default_binarisation_is_one_seeded_random_draw_per_pixel():
    """The default is the published one: grey level = probability of a one, drawn once per pixel
    from the seed (the same seed gives the same digits, another seed other digits); binary data
    pass unchanged, and the old threshold stays an option."""
    assert RBMConfig().binarize == "sample"
    data = ImageDataset(torch.tensor([0, 64, 128, 192, 255], dtype=torch.uint8).repeat(400, 1, 1, 1),
                        None, None, "levels")  # 400 images of 1 x 1 x 5 pixels
    a = binarized(data, RBMConfig().binarize, seed=0).images.float() / 255
    assert torch.equal(a, binarized(data, "sample", seed=0).images.float() / 255)
    assert not torch.equal(a, binarized(data, "sample", seed=1).images.float() / 255)
    share = a.reshape(400, 5).mean(0)
    assert share[0] == 0 and share[-1] == 1  # black and white stay black and white
    for got, p in zip(share[1:4].tolist(), (64 / 255, 128 / 255, 192 / 255)):
        assert abs(got - p) < 4 * (p * (1 - p) / 400) ** 0.5, (got, p)  # the grey level is the probability
    # pixels of one image are drawn independently: not one coin per image
    row = binarized(grey(1, 40), "sample", seed=0).images.float().flatten() / 255
    assert 0.3 < float(row.mean()) < 0.7
    assert torch.equal(binarized(data, "threshold", 0).images, (data.images > 127).to(torch.uint8) * 255)


def test_the_rbm_trains_on_the_seeded_draw(runs):
    """What the task trains on is the sampled digits of its seed, not thresholded ones."""
    from gentool.data import load_dataset

    digits = load_dataset("digits")
    task = rbm_module.RBMTask(RBMConfig(hidden=8), digits, 0.05, 3)
    seen = torch.cat([task.data.images, task.val.images])
    drawn = binarized(digits, "sample", 3).images
    assert sorted(seen.flatten().unique().tolist()) == [0, 255]
    assert int(seen.sum()) == int(drawn.sum())  # the same draw, split into training and validation
    assert int(seen.sum()) != int(binarized(digits, "threshold", 3).images.sum())


def test_k_schedule_is_checked_when_the_options_are_read():
    assert RBMConfig(k=2, k_schedule=("11:5", "3:3")).k_steps() == [(1, 2), (3, 3), (11, 5)]
    half = RBMConfig(k_schedule=("50%:3", "90%:5"))
    assert half.k_steps(100) == [(1, 1), (51, 3), (91, 5)] and half.k_steps(20) == [(1, 1), (11, 3), (19, 5)]
    assert [half.k_at(e, 20) for e in (9, 10, 17, 18)] == [1, 3, 3, 5]
    with pytest.raises(ValueError, match="epochs"):
        half.k_at(0)
    for bad in ("3", "3:0", "0:3", "x:2", "3:2:1", "101%:2", "-5%:2"):
        with pytest.raises(ConfigError, match="k_schedule"):
            build_config(RBMConfig, {"k_schedule": bad})
    with pytest.raises(ConfigError, match="momentum_final"):
        build_config(RBMConfig, {"momentum_final": "1.0"})


def test_k_and_momentum_change_at_the_stated_epochs(runs, monkeypatch):
    """A real run on the digits: count the Gibbs steps each update takes and read the momentum
    the optimizer used, epoch by epoch."""
    seen: list[tuple[int, int, float]] = []  # (epoch, Gibbs steps, momentum) per training step
    step, sample_visible = rbm_module.RBMTask.training_step, rbm_module.RBM.sample_visible
    calls = [0]

    def counting_sample_visible(self, h, generator=None):
        calls[0] += 1
        return sample_visible(self, h, generator)

    def recording_step(self, batch, ctx):
        calls[0] = 0
        out = step(self, batch, ctx)
        seen.append((ctx.epoch + 1, calls[0], ctx.optimizers["sgd"].param_groups[0]["momentum"]))
        return out

    monkeypatch.setattr(rbm_module.RBM, "sample_visible", counting_sample_visible)
    monkeypatch.setattr(rbm_module.RBMTask, "training_step", recording_step)
    gentool.train("rbm", data="digits", epochs=4, batch_size=200, seed=0, quiet=True, hidden=8, method="cd",
                  k_schedule="2:3,75%:5", momentum=0.5, momentum_final=0.9, momentum_epochs=2, sample_steps=5)
    by_epoch = {e: {(k, m) for ee, k, m in seen if ee == e} for e in (1, 2, 3, 4)}
    assert by_epoch == {1: {(1, 0.5)}, 2: {(3, 0.5)}, 3: {(3, 0.9)}, 4: {(5, 0.9)}}, by_epoch


def test_momentum_and_weight_decay_change_the_update_as_the_formula_says(monkeypatch):
    """Two updates with fixed gradients g1, g2 (CD's statistics replaced): SGD with momentum m and
    weight decay d on W only (Hinton 2010, sections 9-10):
    u1 = g1 + d W0, W1 = W0 - lr u1; u2 = m u1 + g2 + d W1, W2 = W1 - lr u2; the biases the same
    without d. From epoch momentum_epochs + 1 on, m is momentum_final."""
    lr, d = 0.1, 0.01
    cfg = RBMConfig(hidden=3, momentum=0.5, momentum_final=0.9, momentum_epochs=1, weight_decay=d, binarize="threshold",
                    k_schedule=())
    task = rbm_module.RBMTask(cfg, grey(20, 2, 200), lr, 0)
    net = task.rbm
    g = torch.Generator().manual_seed(0)
    grads = [{"W": torch.randn(4, 3, generator=g), "b": torch.randn(4, generator=g), "c": torch.randn(3, generator=g)}
             for _ in range(3)]
    calls = iter(grads)

    def fixed(rbm, v0, vk, *a, **kw):
        gr = next(calls)
        return {rbm.W: gr["W"].clone(), rbm.b: gr["b"].clone(), rbm.c: gr["c"].clone()}, kw["ph0"]

    monkeypatch.setattr(rbm_module, "rbm_gradients", fixed)
    opts = task.configure_optimizers()
    ctx = StepContext(torch.device("cpu"), "fp32", World(), opts)
    batch = (torch.ones(5, 1, 2, 2), None)
    W0, b0 = net.W.detach().clone(), net.b.detach().clone()
    ctx.epoch = 0
    task.training_step(batch, ctx)
    ctx.step_count += 1
    u1 = grads[0]["W"] + d * W0
    W1 = W0 - lr * u1
    ub1 = grads[0]["b"]
    b1 = b0 - lr * ub1
    assert torch.allclose(net.W, W1, atol=1e-6) and torch.allclose(net.b, b1, atol=1e-6)
    task.training_step(batch, ctx)  # still epoch 1: momentum 0.5
    ctx.step_count += 1
    u2 = 0.5 * u1 + grads[1]["W"] + d * W1
    W2 = W1 - lr * u2
    ub2 = 0.5 * ub1 + grads[1]["b"]
    b2 = b1 - lr * ub2
    assert torch.allclose(net.W, W2, atol=1e-6) and torch.allclose(net.b, b2, atol=1e-6)
    ctx.epoch = 1  # epoch 2: momentum_final
    task.training_step(batch, ctx)
    u3 = 0.9 * u2 + grads[2]["W"] + d * W2
    assert torch.allclose(net.W, W2 - lr * u3, atol=1e-6)
    assert torch.allclose(net.b, b2 - lr * (0.9 * ub2 + grads[2]["b"]), atol=1e-6)


def test_a_resumed_run_keeps_its_schedules(runs):
    """The schedules are read from the epoch: a run stopped after epoch 2 and resumed to 4 ends
    with the weights of a run that trained 4 epochs straight."""
    from gentool import load_checkpoint

    opts = dict(data="digits", batch_size=200, seed=0, quiet=True, hidden=8, method="cd", k_schedule="3:2",
                momentum_final=0.9, momentum_epochs=2, sample_steps=5, lr_schedule="constant")
    gentool.train("rbm", epochs=4, name="straight", **opts)
    gentool.train("rbm", epochs=2, name="split", **opts)
    gentool.train("rbm", epochs=4, resume="split", **opts)
    a = load_checkpoint(runs / "rbm/straight/last.safetensors").tensors()
    b = load_checkpoint(runs / "rbm/split/last.safetensors").tensors()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    records = [json.loads(x) for x in (runs / "rbm/split/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2, 3, 4]
