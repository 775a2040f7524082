"""gan, cgan and dcgan (stylegan: test_stylegan.py) through the real entry point and command line, on the embedded digits."""

from __future__ import annotations

import json

import pytest
import torch
from gan_testing import gentool


def test_registers_its_models_and_imports_only_the_facade():
    from gentool.testing import assert_imports_only_the_facade
    from gentool_gan import plugin

    registered = []
    plugin.gentool_register_models(registered.append)
    names = [s.name for s in registered]
    assert names[:4] == ["gan", "cgan", "dcgan", "stylegan"] and len(names) == len(set(names)), names
    assert_imports_only_the_facade(plugin.__file__)


@pytest.mark.parametrize("model", ["gan", "dcgan"])
def test_unconditional_models_train_sample_and_evaluate(env, tmp_path, model):
    res = gentool("train", model, "--epochs", "2", "--set", "val_samples=200", "-q", env=env)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / model / "run1"
    for f in ("last.safetensors", "best.safetensors", "samples/epoch_002.png", "metrics.jsonl"):
        assert (run / f).exists(), f
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs if e["type"] == "epoch"] == [1, 2]
    assert all(e["fd"] > 0 for e in epochs if e["type"] == "epoch")
    res = gentool("sample", model, "-n", "6", "--out", "s", env=env)
    assert res.returncode == 0, res.stderr
    assert len(list((tmp_path / "s").glob("0*.png"))) == 6 and (tmp_path / "s/grid.png").exists()
    res = gentool("sample", model, "-n", "5", "--interpolate", "--out", "walk", env=env)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "walk/interpolation.gif").exists() and "interpolation.gif" in res.stdout
    res = gentool("evaluate", model, "--json", "-n", "300", env=env)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    m = doc["metrics"]
    assert doc["settings"]["features"].startswith("gentool-cnn[digits:") and m["n_fake"] == 300 and m["n_real"] == 359
    for key in ("fd", "kid_mean", "precision", "recall", "density", "coverage"):
        assert key in m and m[key] == m[key]  # present and not NaN
    # a label means nothing to an unconditional model: one line, non-zero exit
    res = gentool("sample", model, "--label", "3", env=env)
    assert res.returncode == 1 and "unconditional" in res.stderr and "Traceback" not in res.stderr


def test_cgan_samples_are_of_the_asked_class(trained_cgan):
    """The default cgan on the embedded digits: an independent classifier (trained on the real
    training digits, never on generated ones) agrees with the asked label."""
    base, env = trained_cgan
    res = gentool("evaluate", "cgan", "--json", "-n", "1000", "--cas-images", "1000", "--cas-epochs", "3", env=env)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    m = doc["metrics"]
    assert doc["settings"]["classifier"].startswith("gentool-cnn[digits:") and m["classifier_test_accuracy"] > 0.9
    assert m["class_faithfulness"] > 0.9, m
    assert m["class_faithfulness_worst_class"] > 0.5, m
    # CAS: a classifier trained only on generated digits recognises real test digits
    assert m["cas"] > 0.5 and 0.5 < m["cas_real_baseline"] <= 1, m


def test_cgan_label_choices_and_errors(trained_cgan, tmp_path, monkeypatch):
    base, env = trained_cgan
    from gentool.data import load_dataset
    from gentool.metrics import get_extractor

    res = gentool("sample", "cgan", "-n", "20", "--label", "7", "--out", str(tmp_path / "seven"), env=env)
    assert res.returncode == 0, res.stderr
    files = sorted((tmp_path / "seven").glob("0*.png"))
    assert len(files) == 20 and all(f.name.endswith("_7.png") for f in files)
    res = gentool("sample", "cgan", "-n", "3", "--label", "all", "--out", str(tmp_path / "all"), env=env)
    assert res.returncode == 0 and len(list((tmp_path / "all").glob("0*.png"))) == 30
    for bad, words in ((["--label", "12"], "out of range"), (["--label", "seven"], "unknown class"),
                       (["--labl", "3"], "--label")):
        res = gentool("sample", "cgan", *bad, env=env)
        assert res.returncode == 1 and words in res.stderr and "Traceback" not in res.stderr, res.stderr
    # the class-7 images are sevens to a classifier trained on real digits
    import numpy as np
    from PIL import Image

    monkeypatch.setenv("GENTOOL_CACHE", env["GENTOOL_CACHE"])
    judge = get_extractor(None, load_dataset("digits", split="train"))

    imgs = torch.from_numpy(np.stack([np.asarray(Image.open(f)) for f in files]))[:, None]
    assert (judge.predict(imgs) == 7).mean() > 0.8


def test_as_dataset_export_loads_back_with_the_right_labels(trained_cgan, tmp_path, monkeypatch):
    """Synthetic data for augmentation: one folder per class, loadable by --data with its labels."""
    base, env = trained_cgan
    out = tmp_path / "synthetic"
    res = gentool("sample", "cgan", "-n", "200", "--as-dataset", "--out", str(out), env=env)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == [str(i) for i in range(10)]
    assert all(len(list((out / str(i)).glob("*.png"))) == 20 for i in range(10))  # balanced

    from gentool.data import load_dataset
    from gentool.metrics import get_extractor

    ds = load_dataset(str(out), split="all")
    assert len(ds) == 200 and ds.class_names == [str(i) for i in range(10)]
    assert torch.equal(torch.bincount(ds.labels, minlength=10), torch.full((10,), 20))
    # the labels that came back are the classes the images were drawn for
    monkeypatch.setenv("GENTOOL_CACHE", env["GENTOOL_CACHE"])
    judge = get_extractor(None, load_dataset("digits", split="train"))
    agree = (torch.from_numpy(judge.predict(ds.images)) == ds.labels).float().mean()
    assert agree > 0.85, float(agree)
    # and gentool trains on it
    res = gentool("train", "gan", "--data", str(out), "--epochs", "1", "--set", "val_samples=0", "-q", env=env)
    assert res.returncode == 0, res.stderr


@pytest.mark.slow  # 56 s on CPUs without bf16 instructions, which emulate it; tests/test_training.py covers bf16 in CI
def test_bf16_autocast_trains_on_the_cpu(env, tmp_path):
    res = gentool("train", "dcgan", "--epochs", "1", "--precision", "bf16", "--set", "val_samples=0", "-q", env=env)
    assert res.returncode == 0, res.stderr
    res = gentool("train", "cgan", "--epochs", "1", "--precision", "bf16", "--set", "loss=wgan-gp",
                  "--set", "val_samples=0", "-q", env=env)
    assert res.returncode == 0, res.stderr


def test_bad_input_gets_one_line(env, tmp_path):
    res = gentool("train", "dcgan", "--image-size", "9", "--epochs", "1", env=env)
    assert res.returncode != 0 and "dcgan cannot build networks for 9x9" in res.stderr and "Traceback" not in res.stderr
    res = gentool("train", "cgan", "--set", "loss=wasserstein", env=env)
    assert res.returncode != 0 and "loss" in res.stderr and "Traceback" not in res.stderr


def test_dcgan_resume_is_exact(env, tmp_path):
    """Two epochs straight, or one epoch then --resume to two, give the same weights: the
    generator, discriminator, EMA generator (with its recalibrated batch-norm statistics) and
    both optimizers' state all come back from the checkpoint."""
    from gentool.testing import assert_resume_is_exact

    a, _ = assert_resume_is_exact("dcgan", "--set", "val_samples=100", "--seed", "3", "-q", env=env,
                                  runs=tmp_path / "runs")
    assert any(k.startswith("g_ema.") and "running_mean" in k for k in a.tensors())
