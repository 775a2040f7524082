"""stylegan: the networks' building blocks, sampling (seeds, truncation, mixing, labels), checkpoints,
exact resume, ADA, and one-line errors through the real command line.

Tiny networks throughout (``TINY``); a trained conditional model's class faithfulness is checked
with --runslow only (minutes of CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gan_testing import gentool, make_env

TINY = ["--set", "width=8", "--set", "max_width=16", "--set", "z_dim=16", "--set", "w_dim=16",
        "--set", "map_layers=1", "--set", "val_samples=0"]


def tiny_cfg(**values):
    from gentool.config import build_config
    from gentool_gan.configs import StyleGANConfig

    return build_config(StyleGANConfig, {"width": 8, "max_width": 16, "z_dim": 16, "w_dim": 16, "map_layers": 1,
                                         "val_samples": 0, **values})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    """Two tiny stylegans trained one epoch (11 steps of 128) on the embedded digits: conditional (run 'cond') and
    unconditional (run 'uncond', cond=false). Returns (base folder, env)."""
    base = tmp_path_factory.mktemp("stylegan")
    env = make_env(base / "runs", cache_dir)
    for name, extra in (("cond", []), ("uncond", ["--set", "cond=false"])):
        res = gentool("train", "stylegan", "--epochs", "1", "--batch-size", "128", "--name", name, *TINY, *extra, "-q",
                      env=env, cwd=base)
        assert res.returncode == 0, res.stderr
    return base, env


def ckpt(base: Path, run: str) -> Path:
    return base / "runs" / "stylegan" / run / "last.safetensors"


def load(base: Path, run: str):
    import gentool

    return gentool.load(str(ckpt(base, run)), device="cpu")


def read_pngs(folder: Path) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(f)) for f in sorted(folder.glob("0*.png"))])


# -- building blocks --------------------------------------------------------------------------
def test_modulated_convolution_keeps_unit_variance_and_demodulates():
    """Unit-variance input, any styles: demodulated outputs have unit variance (inside the zero
    padding's border); the per-sample weights have unit norm per output channel, shape
    [B, cout, cin, k, k]; the batched computation equals a convolution with those weights; without
    demodulation the variance follows the styles' scale instead."""
    import torch.nn.functional as F
    from gentool_gan.stylegan import ModulatedConv

    torch.manual_seed(0)
    conv = ModulatedConv(64, 48, 3, w_dim=32)
    with torch.no_grad():
        conv.affine.weight.mul_(3.0)  # styles far from 1: modulation alone would scale the output
    x, w = torch.randn(6, 64, 12, 12), torch.randn(6, 32)
    with torch.no_grad():
        out = conv(x, w)
    assert out.shape == (6, 48, 12, 12)
    inner = out[:, :, 1:-1, 1:-1]
    assert 0.9 < float(inner.std()) < 1.1, float(inner.std())
    per_sample = inner.transpose(0, 1).flatten(1).std(1)  # every output channel, not just the average
    assert 0.75 < float(per_sample.min()) and float(per_sample.max()) < 1.25

    styles = conv.affine(w).detach()
    weights = conv.weights(styles)
    assert weights.shape == (6, 48, 64, 3, 3)
    assert torch.allclose(weights.square().sum(dim=(2, 3, 4)), torch.ones(6, 48), atol=1e-4)
    per_sample_conv = torch.cat([F.conv2d(x[i : i + 1], weights[i], padding=1) for i in range(6)])
    assert torch.allclose(out, per_sample_conv, atol=1e-4)

    plain = ModulatedConv(64, 48, 3, w_dim=32, demodulate=False)
    plain.load_state_dict(conv.state_dict())
    assert float(plain(x, w)[:, :, 1:-1, 1:-1].detach().std()) > 2.0  # the styles' scale shows through


def test_image_sizes_the_networks_build_and_refuse():
    from gentool import ConfigError
    from gentool_gan.stylegan import build, plan

    cfg = tiny_cfg()
    for side, c in ((8, 1), (28, 1), (32, 3), (64, 3)):
        g, d = build((c, side, side), 10, cfg)
        with torch.no_grad():
            img = g.eval()(torch.randn(2, 16), torch.tensor([1, 2]))
            assert img.shape == (2, c, side, side)
            assert d(img, torch.tensor([1, 2])).shape == (2,)
    assert plan(28) == (7, 2) and plan(32) == (4, 3) and plan(128) == (4, 5)
    for side in (9, 6, 36 * 3):
        with pytest.raises(ConfigError, match=f"stylegan cannot build networks for {side}x{side}"):
            plan(side)


def test_the_discriminator_takes_its_own_widths_when_given():
    """d_width / d_max_width size the discriminator alone (the generator keeps width / max_width);
    unset, both networks share the generator's; a narrower cap than the width is refused."""
    from gentool import ConfigError
    from gentool_gan.stylegan import build

    def channels(net):
        return sorted({m.weight.shape[0] for m in net.modules() if getattr(m, "weight", None) is not None
                       and m.weight.dim() == 4})

    shape = (3, 32, 32)
    g0, d0 = build(shape, None, tiny_cfg())
    g1, d1 = build(shape, None, tiny_cfg(d_width=16, d_max_width=64))
    assert channels(g1) == channels(g0)
    assert max(channels(d0)) == 16 and max(channels(d1)) == 64 and 16 in channels(d1)
    assert sum(p.numel() for p in d1.parameters()) > 4 * sum(p.numel() for p in d0.parameters())
    assert d1(g1(torch.randn(2, 16))).shape == (2,)
    with pytest.raises(ConfigError, match="d_max_width must be at least d_width"):
        tiny_cfg(d_width=32, d_max_width=16)
    with pytest.raises(ConfigError, match="d_width must be at least 1"):
        tiny_cfg(d_width=0)


def test_truncation_pulls_towards_each_class_average():
    from gentool_gan.stylegan import build

    torch.manual_seed(0)
    g, _ = build((1, 8, 8), 3, tiny_cfg())
    g.eval()
    with torch.no_grad():
        g.mapping.w_avg.normal_()  # three distinct class centres
        z, y = torch.randn(4, 16), torch.tensor([0, 0, 2, 2])
        w0 = g.mapping(z, y, psi=0.0)
        assert torch.equal(w0, g.mapping.w_avg[y])
        w_half, w_full = g.mapping(z, y, psi=0.5), g.mapping(z, y)
        assert torch.allclose(w_half, (w_full + g.mapping.w_avg[y]) / 2, atol=1e-6)
        img0 = g(z, y, psi=0.0)
        assert torch.equal(img0[0], img0[1]) and torch.equal(img0[2], img0[3]) and not torch.equal(img0[0], img0[2])

        # the running mean follows each class's own w
        g.train()
        before = g.mapping.w_avg.clone()
        g.ws(torch.randn(8, 16), torch.tensor([1] * 8), update_avg=True)
        assert torch.equal(g.mapping.w_avg[[0, 2]], before[[0, 2]]) and not torch.equal(g.mapping.w_avg[1], before[1])


# -- a trained model through the command line --------------------------------------------------
def test_seeds_are_reproducible_whatever_n(trained, tmp_path):
    base, env = trained
    m = load(base, "uncond")
    a = m.sample(4, seeds="3-6").images
    b = m.sample(2, seeds="0-15").images
    assert len(a) == 4 and len(b) == 16  # one image per seed, whatever n
    assert torch.allclose(a, b[3:7], atol=1e-5)  # float rounding may differ between batch sizes, no more
    assert not torch.allclose(b[0], b[1], atol=1e-3)
    # the plain stream: the same --seed gives the same images, another seed others
    s1, s2, s3 = m.sample(6, seed=1).images, m.sample(6, seed=1).images, m.sample(6, seed=2).images
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)
    # image i of seed s is the first draw of that seed: -n 1 --seed 5 is --seeds 5
    assert torch.allclose(m.sample(1, seed=5).images[0], m.sample(1, seeds="5").images[0], atol=1e-6)
    # split into chunks as the core does for large n, the stream gives the same images
    from gentool_gan.stylegan_sample import sample as hook

    g = torch.Generator().manual_seed(9)
    parts = []
    for first, count in ((0, 4), (4, 2)):
        parts.append(_job_sample(m, hook, count, first, 6, g, tmp_path))
    assert torch.allclose(torch.cat(parts), m.sample(6, seed=9).images, atol=1e-5)


def _job_sample(model, hook, n, first, total, generator, out):
    from gentool import SampleJob
    from gentool_gan.configs import StyleGANSampleOptions

    job = SampleJob(spec=model.spec, checkpoint=model.checkpoint, n=n, device=torch.device("cpu"), generator=generator,
                    seed=9, options=StyleGANSampleOptions(), out=out)
    job.first, job.total = first, total
    return hook(job).images


def test_psi_zero_gives_the_w_average_image(trained):
    base, env = trained
    m = load(base, "uncond")
    imgs = m.sample(5, trunc=0).images
    assert all(torch.equal(imgs[0], imgs[i]) for i in range(1, 5))
    from gentool_gan.sampling import load_generator
    from gentool_gan.stylegan_sample import render

    g, *_ = load_generator("stylegan", m.checkpoint, torch.device("cpu"))
    avg = g.mapping.w_avg[:1, None].expand(1, g.num_ws, -1)
    assert g.mapping.w_avg.abs().sum() > 0  # trained: the running mean moved off its zero start
    assert torch.allclose(imgs[:1], render(g, avg, torch.device("cpu")), atol=1e-6)
    assert not torch.equal(m.sample(5, trunc=1).images[0], imgs[0])


def test_style_mixing_table_takes_coarse_from_rows_and_fine_from_columns(trained, tmp_path):
    base, env = trained
    m = load(base, "uncond")
    plain = m.sample(3, seeds="0-2").images
    mixed = m.sample(3, seeds="0-2", mix=True, out=tmp_path / "mix")
    assert (tmp_path / "mix" / "style_mixing.png").exists() and mixed.nrow == 3
    cells = mixed.images.view(3, 3, *plain.shape[1:])
    for i in range(3):
        assert torch.allclose(cells[i, i], plain[i], atol=1e-6)  # both halves from one latent: that image
    # an off-diagonal cell depends on both latents: it is neither source image
    assert not torch.allclose(cells[0, 1], plain[0], atol=1e-3) and not torch.allclose(cells[0, 1], plain[1], atol=1e-3)
    assert not torch.allclose(cells[0, 1], cells[0, 2], atol=1e-3)  # the column (fine) latent matters
    assert not torch.allclose(cells[0, 1], cells[2, 1], atol=1e-3)  # the row (coarse) latent matters
    from PIL import Image

    table = Image.open(tmp_path / "mix" / "style_mixing.png")
    assert table.size[0] == table.size[1]  # (3 + 1) x (3 + 1) tiles with the sources
    walk = m.sample(5, interpolate=True, out=tmp_path / "walk")
    assert (tmp_path / "walk" / "interpolation.gif").exists() and len(walk.images) == 5
    # a walk through the seeds passes through their images (frames 0, 3 and 6 of 7)
    walk = m.sample(7, seeds="0-2", interpolate=True, out=tmp_path / "walk2").images
    assert torch.allclose(walk[[0, 3, 6]], plain, atol=1e-5)
    assert not torch.allclose(walk[1], plain[0], atol=1e-3)


def test_labels_steer_a_conditional_model(trained):
    """The label reaches the generator: one latent drawn for different labels gives different
    images, the same label the same image; --label all gives a row per class."""
    base, env = trained
    m = load(base, "cond")
    assert m.checkpoint.extra["num_classes"] == 10
    sevens = m.sample(4, label="7", seed=3)
    assert sevens.labels.tolist() == [7] * 4
    threes = m.sample(4, label="3", seed=3)
    assert not torch.allclose(sevens.images, threes.images, atol=1e-3)
    assert torch.equal(sevens.images, m.sample(4, label="7", seed=3).images)
    every = m.sample(2, label="all", seed=3)
    assert every.labels.tolist() == [c for c in range(10) for _ in range(2)] and every.nrow == 2
    assert torch.allclose(every.images[14:16], sevens.images[:2], atol=1e-5)
    # at psi 0 the image is its class's average: one per class, different between classes
    avg = m.sample(20, trunc=0).images  # balanced labels 0..9, twice
    assert torch.equal(avg[0], avg[10]) and not torch.equal(avg[0], avg[1])


def test_checkpoint_round_trip(trained):
    """The file holds every tensor of the EMA generator (fixed noise and w_avg included): a
    generator rebuilt from the file's config and loaded from it draws what sampling draws."""
    base, env = trained
    from gentool import load_checkpoint
    from gentool_gan.sampling import load_generator
    from gentool_gan.stylegan_sample import images_for, seed_latents

    c = load_checkpoint(ckpt(base, "cond"))
    g, cfg, _, _ = load_generator("stylegan", c, torch.device("cpu"))  # what sampling builds
    assert (cfg.width, cfg.z_dim, cfg.cond) == (8, 16, True)
    saved = c.state_dict("g_ema")
    assert saved.keys() == g.state_dict().keys()
    assert any("noise_const" in k for k in saved) and "mapping.w_avg" in saved
    z, y = seed_latents([0, 1, 2], cfg.z_dim), torch.tensor([4, 5, 6])
    drawn = images_for(g.eval(), z, y, 1.0, torch.device("cpu"))
    m = load(base, "cond")
    assert torch.allclose(drawn[0], m.sample(1, seeds="0", label="4").images[0], atol=1e-5)
    assert torch.allclose(drawn[2], m.sample(1, seeds="2", label="6").images[0], atol=1e-5)


def test_resume_is_exact_with_ada(env, tmp_path):
    """Two epochs straight, or one then --resume: the same weights, EMA generator, w_avg, both
    optimizers, the ADA probability and its accumulators, and the EMA ramp's count of images
    (``ema_ramp=1`` makes the ramp set the decay from the first steps, so a lost count shows)."""
    from gentool.testing import assert_resume_is_exact

    a, b = assert_resume_is_exact("stylegan", *TINY, "--batch-size", "128", "--set", "augment=ada", "--set", "ema_ramp=1",
                                  "--set", "ada_kimg=1",
                                  "--set", "ada_target=0.05", "--set", "ada_interval=2", "--set", "r1_every=4", "--seed", "2",
                                  "-q", env=env, runs=tmp_path / "runs")
    assert a.extra["ada_p"] == b.extra["ada_p"] and a.extra["augment"] == "ada"
    assert 0 < a.extra["ada_p"] <= 1  # ADA was at work, so its state had to come back


def test_ema_half_life_grows_with_the_images_seen():
    """StyleGAN2-ADA's EMA ramp: once ``ema_ramp`` of the images seen is a longer half-life than
    ``ema_decay``'s, the decay per update is 0.5 ** (batch / half-life); the count survives a
    checkpoint, and a run saved before the count existed takes updates times batch size."""
    from gentool.data import load_dataset
    from gentool.training import StepContext

    from gentool import distributed
    from gentool_gan.stylegan_train import StyleGANTask, ramped_decay

    assert ramped_decay(0.995, 0.05, 0, 32) == 0.995  # nothing seen: the fixed decay
    assert ramped_decay(0.995, 0.0, 10**6, 32) == 0.995  # ramp off
    assert ramped_decay(0.995, 0.05, 400_000, 32) == pytest.approx(0.5 ** (32 / 20_000))  # 0.99889
    assert ramped_decay(0.995, 0.05, 40_000, 32) == 0.995  # a 2,000-image half-life is shorter than 0.995's

    torch.manual_seed(0)
    data = load_dataset("digits", split="train").subset(slice(0, 64))
    task = StyleGANTask(tiny_cfg(cond=False, ema_ramp=0.5, ema_decay=0.5), data, lr=5e-3, batch_size=16)
    ctx = StepContext(torch.device("cpu"), "fp32", distributed.launched_world(), task.configure_optimizers())
    for step in range(3):
        ctx.step_count = step
        task.training_step(next(iter(task.batches(step, 16, 0, 1, 0))), ctx)
    assert task.images_seen == 48 and task.g_updates == 3
    assert task.ema_decay_now() == pytest.approx(0.5 ** (16 / 24))  # ramp (0.63) beats 0.5
    state = task.extra_state()
    other = StyleGANTask(tiny_cfg(cond=False, ema_ramp=0.5, ema_decay=0.5), data, lr=5e-3, batch_size=16)
    other.load_extra_state(state)
    assert other.images_seen == 48 and other.ema_decay_now() == task.ema_decay_now()
    old = {k: v for k, v in state.items() if k not in ("images_seen", "last_batch")}
    other.load_extra_state(old)
    assert other.images_seen == 3 * 16


def test_ada_resampling_is_twice_differentiable_like_grid_sample():
    """The R1 penalty on ADA-augmented reals differentiates a gradient taken through the
    resampling. CUDA has no derivative for grid_sample's backward (found on a GPU: the first R1
    step after p left 0 failed), so the augmentation uses its own wrapper: it must give
    grid_sample's value, its gradient and the gradient of that gradient (checked here against the
    CPU's own differentiable grid_sample, in float64), and refuse a second derivative through the grid."""
    import torch.nn.functional as F

    from gentool_gan.augment import geometric_matrix, resample

    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    m = geometric_matrix(2, 1.0, torch.device("cpu"))
    grid = F.affine_grid(m[:, :2, :].double(), [2, 3, 8, 8], align_corners=False)

    def reference(t):
        return F.grid_sample(t, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    assert torch.equal(resample(x, grid), reference(x))
    assert torch.autograd.gradgradcheck(lambda t: resample(t, grid), (x,))
    w = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)  # stands in for D's weights

    def r1_grad(f):  # d/dw |d/dx <w, f(x)>|^2, the shape of R1's gradient
        (g,) = torch.autograd.grad((f(x) * w).sum(), x, create_graph=True)
        return torch.autograd.grad(g.square().sum(), w)[0]

    ours, theirs = r1_grad(lambda t: resample(t, grid)), r1_grad(reference)
    assert ours.abs().max() > 1 and torch.allclose(ours, theirs, rtol=1e-10, atol=1e-10)
    movable = grid.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t, g: resample(t, g), (x, movable))  # first order in the grid
    (gg,) = torch.autograd.grad(resample(x, movable).square().sum(), movable, create_graph=True)
    with pytest.raises(NotImplementedError, match="through the sampling grid"):
        torch.autograd.grad(gg.square().sum(), x)


def test_ada_probability_rises_when_the_discriminator_overfits():
    """The controller: signs of D(real) whose mean r_t is above the target raise p by images /
    (kimg * 1000) per update; below it, p falls and stops at 0. In training, a discriminator that
    memorises a tiny data set drives p up."""
    from gentool.data import load_dataset
    from gentool.training import StepContext

    from gentool import distributed
    from gentool_gan.augment import ADA, ada_augment
    from gentool_gan.stylegan_train import StyleGANTask

    ada = ADA(target=0.6, kimg=1.0, interval=4)
    ada.observe(torch.tensor([1.0, 1.0, 1.0, -1.0, -2.0]))  # r_t = 0.2: below target, p stays at 0
    ada.adjust(100)
    assert ada.r_t == pytest.approx(0.2) and ada.p == 0.0
    ada.observe(torch.tensor([1.0, 3.0, 0.5, 1.0, -1.0]))  # r_t = 0.6 + 0.2
    ada.observe(torch.tensor([1.0] * 5))
    ada.adjust(100)
    assert ada.r_t == pytest.approx(0.8) and ada.p == pytest.approx(0.1)  # 100 images of 1,000
    ada.observe(-torch.ones(4))
    ada.adjust(500)
    assert ada.p == 0.0
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert torch.equal(ada_augment(x, 0.0), x) or torch.allclose(ada_augment(x, 0.0), x, atol=1e-5)
    assert not torch.allclose(ada_augment(x, 1.0), x, atol=1e-2)

    # in training: 8 real digits and a generator held still (learning rate 0), so the discriminator
    # soon tells those 8 images from everything else; r_t rises over the target and p follows
    torch.manual_seed(0)
    data = load_dataset("digits", split="train").subset(slice(0, 8))
    task = StyleGANTask(tiny_cfg(augment="ada", ada_kimg=0.5, cond=False), data, lr=5e-3, batch_size=8)
    task.g_lr = 0.0
    ctx = StepContext(torch.device("cpu"), "fp32", distributed.launched_world(), task.configure_optimizers())
    ps, rts = [], []
    for step in range(80):
        ctx.step_count = step
        out = task.training_step(next(iter(task.batches(step, 8, 0, 1, 0))), ctx)
        ps.append(out["ada_p"])
        rts.append(task.ada.r_t)
    assert ps[0] == 0.0 and ps[-1] > 0.5, ps[::8]
    assert max(rts) > 0.6  # the overfitting signal that drove it


# -- errors -----------------------------------------------------------------------------------
def test_bad_inputs_get_one_line(trained):
    base, env = trained
    cases = [  # through the command line: one line on stderr, exit code 1 or 2, no traceback
        (["train", "stylegan", "--image-size", "9", "--epochs", "1", *TINY], "stylegan cannot build networks for 9x9"),
        (["sample", "stylegan", "-c", "cond", "--trunc", "abc"], "trunc"),
    ]
    for args, words in cases:
        res = gentool(*args, env=env, cwd=base)
        lines = [x for x in res.stderr.strip().splitlines() if x.strip()]
        assert res.returncode != 0 and words in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)
        assert len(lines) <= 2, (args, res.stderr)
    # the same checks in-process (the command line prints these messages as its one line)
    from gentool import GentoolError

    with pytest.raises(GentoolError, match="unconditional"):
        load(base, "uncond").sample(4, label="3")
    m = load(base, "cond")
    for kwargs, words in (({"label": "12"}, "out of range"), ({"label": "eleven"}, "unknown class"),
                          ({"trunc": 1.5}, "--trunc must lie in [0, 1]"), ({"seeds": "9-2"}, "runs backwards"),
                          ({"seeds": "a-b"}, "give seeds as"), ({"mix": True, "n": 5000}, "at most 1000"),
                          ({"interpolate": True, "n": 1001}, "at most 1000"), ({"mix": True, "label": "all"}, "not 'all'")):
        n = kwargs.pop("n", 4)
        with pytest.raises(GentoolError, match=words.replace("[", r"\[").replace("]", r"\]")) as info:
            m.sample(n, **kwargs)
        assert "\n" not in str(info.value)


def test_evaluate_reports_the_truncation_trade_off(trained, monkeypatch):
    base, env = trained
    monkeypatch.setenv("GENTOOL_CACHE", env["GENTOOL_CACHE"])  # the session's feature extractor
    result = load(base, "uncond").evaluate(n=200, psis=(0.5, 1.0))
    m = result.metrics
    for key in ("fd", "kid_mean", "precision", "recall", "density", "coverage", "fd_psi0.5", "fd_psi1",
                "precision_psi0.5", "recall_psi0.5", "recall_psi1", "coverage_psi1"):
        assert key in m and m[key] == m[key], key
    assert m["fd_psi0.5"] != m["fd_psi1"]  # truncation changes the images
    plot = Path(result.settings["truncation_plot"])
    assert plot.exists() and plot.parent == ckpt(base, "uncond").parent and plot.stat().st_size > 1000


def test_evaluate_gives_class_faithfulness_along_the_truncation(trained, monkeypatch):
    """A conditional model's trade-off table has class faithfulness per psi: psi 1 is the plain
    figure; at psi 0 every sample of a label is that label's average image, so each label is all
    right or all wrong and the share is a whole number of tenths. Unconditional: no such keys."""
    base, env = trained
    monkeypatch.setenv("GENTOOL_CACHE", env["GENTOOL_CACHE"])
    m = load(base, "cond").evaluate(n=200, psis=(0.0, 1.0)).metrics
    assert m["class_faithfulness_psi1"] == m["class_faithfulness"]
    at0 = m["class_faithfulness_psi0"]
    assert 0 <= at0 <= 1 and abs(at0 * 10 - round(at0 * 10)) < 1e-6, at0
    assert not any(k.startswith("class_faithfulness") for k in load(base, "uncond").evaluate(n=50, psis=(0.5,)).metrics)


@pytest.mark.slow
def test_default_conditional_stylegan_draws_the_asked_digit(env):
    """The defaults on the embedded digits (`gentool train stylegan`): an independent classifier,
    trained on real digits, assigns the samples to the asked label."""
    res = gentool("train", "stylegan", "-q", env=env)
    assert res.returncode == 0, res.stderr
    res = gentool("evaluate", "stylegan", "--json", "-n", "1000", "--psis", "1", env=env)
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)["metrics"]
    assert m["classifier_test_accuracy"] > 0.9
    assert m["class_faithfulness"] > 0.9, m
