"""On real data (MNIST from ../shared/data): fakes of two different generators trained here
(the VAE example and a DCGAN), a detector trained on one generator's fakes only, scored on the
other's; calibration measured on the held-out test part; the GAN discriminator baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gentool
from gentool_detect import metrics
from gentool_detect.configs import DetectorConfig
from gentool_detect.data import build_pool, split
from gentool_detect.train import calibrate, fit_plain, logits_of


@pytest.fixture(scope="module")
def mnist_pool(mnist_generators):
    real = gentool.load_dataset(str(mnist_generators["npz"]), split="train")
    cfg = DetectorConfig(fake_from=f"{mnist_generators['dcgan']},{mnist_generators['vae']}", limit=1200,
                         fakes_per_generator=600, width=8, augment=0.1)
    pool = build_pool(real, cfg, None, seed=0)
    assert pool.generators == ["dcgan/dcgan", "vae/vae"]
    return cfg, pool, split(pool, cfg, seed=0)


def _only(pool, keep_sources):
    return pool.take(np.nonzero(np.isin(pool.source.numpy(), keep_sources))[0])


def test_trained_on_one_generator_scores_another_above_chance(mnist_pool):
    cfg, pool, parts = mnist_pool
    train, test = pool.take(parts["train"]), pool.take(parts["test"])
    net = fit_plain(cfg, _only(train, [-1, 0]), epochs=2, lr=1e-3, batch_size=32, seed=0)  # dcgan fakes only
    seen, unseen = _only(test, [-1, 0]), _only(test, [-1, 1])
    auc_seen = metrics.auc(seen.labels.numpy(), logits_of(net, seen.images))
    auc_unseen = metrics.auc(unseen.labels.numpy(), logits_of(net, unseen.images))
    assert auc_seen > 0.9, auc_seen
    assert auc_unseen > 0.6, auc_unseen  # the VAE was never seen in training


def test_calibration_lowers_ece_on_held_out_images(mnist_pool):
    cfg, pool, parts = mnist_pool
    net = fit_plain(cfg, pool.take(parts["train"]), epochs=2, lr=1e-3, batch_size=32, seed=1)
    test = pool.take(parts["test"])
    y = test.labels.numpy()
    z = logits_of(net, test.images)
    before = metrics.ece(y, 1 / (1 + np.exp(-z)))
    fitted = calibrate(net, pool.take(parts["calib"]))  # on the calib part, not the test part
    with torch.no_grad():
        after = metrics.ece(y, torch.sigmoid(net.calibrated(torch.from_numpy(z))).numpy())
    assert fitted["temperature"] != 1.0
    assert after < before, (before, after)


def test_discriminator_through_the_core_matches_the_gan_plugin(mnist_generators):
    gan_mod = pytest.importorskip("gentool_gan.task")  # the test may import it; the plugin does not
    from gentool_detect.discriminator import Discriminator

    path = mnist_generators["dcgan"]
    ckpt = gentool.load_checkpoint(path)
    cfg = gentool.config_from_dict(pytest.importorskip("gentool_gan.configs").DCGANConfig, ckpt.config)
    _, d = gan_mod.make_networks("dcgan", tuple(ckpt.data["shape"]), None, cfg)
    ckpt.load_into({"d": d}, strict=False)
    d.eval()
    x = torch.rand(6, *ckpt.data["shape"])
    with torch.no_grad():
        expected = d(x * 2 - 1)
    assert torch.allclose(Discriminator(path)(x), expected, atol=1e-4)
    with pytest.raises(gentool.CheckpointError, match="discriminator"):
        Discriminator(mnist_generators["vae"])


@pytest.mark.filterwarnings("ignore:no test split")  # the core loads --data's test split; the detector uses its own
def test_train_with_fake_from_then_evaluate_everything(mnist_generators, tmp_path, monkeypatch):
    monkeypatch.setenv("GENTOOL_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("GENTOOL_CACHE", str(mnist_generators["base"] / "cache"))
    gens = f"{mnist_generators['dcgan']},{mnist_generators['vae']}"
    run = gentool.train("detector", data=str(mnist_generators["npz"]), epochs=1, batch_size=32, quiet=True,
                        threads=1, fake_from=gens, limit=400, fakes_per_generator=200, width=8)
    ckpt = gentool.load_checkpoint(run.checkpoint)
    assert ckpt.extra["pool"]["fake"] == {"dcgan/dcgan": 200, "vae/vae": 200}
    e = gentool.load(run.checkpoint, device="cpu").evaluate(quiet=True, logo_epochs=1,
                                                             discriminator=mnist_generators["dcgan"])
    m = e.metrics
    for key in ("accuracy", "auc", "ap", "eer", "ece_before", "ece_after", "auc_jpeg75", "auc_blur", "auc_resize05",
                "logo_auc[dcgan/dcgan]", "logo_auc[vae/vae]", "logo_auc_mean", "disc_auc"):
        assert m[key] is not None and 0 <= m[key] <= 1, key
    assert m["test_real"] == 60 and m["test_fake"] == 60  # the 15% test part, stratified
    assert m["auc"] > 0.8
    assert (run.dir / "reliability.png").stat().st_size > 1000
