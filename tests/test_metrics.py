"""Tests of gentool.metrics: distances against known values, extractors, caching, Inception."""

from __future__ import annotations

import gzip
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from gentool.errors import GentoolError
from gentool.metrics import (
    FeatureExtractor,
    compute_image_metrics,
    frechet_distance,
    frechet_distance_from_stats,
    get_extractor,
    kernel_inception_distance,
    precision_recall_density_coverage,
    prepare_images,
)
from gentool.metrics import distances, features
from gentool.metrics.inception import FIDInceptionV3

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@dataclass
class FakeDataset:
    """Stand-in for gentool.data.ImageDataset (same fields), so these tests stand alone."""

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str] | None
    name: str

    def as_float(self) -> torch.Tensor:
        return self.images.float() / 255.0


# ----------------------------------------------------------------------------- Fréchet distance


def test_fd_of_identical_sets_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16))
    fd = frechet_distance(a, a)
    assert abs(fd) < 1e-6 * np.trace(np.cov(a, rowvar=False))


def test_fd_diagonal_gaussians_matches_closed_form():
    rng = np.random.default_rng(1)
    d = 5
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance_from_stats(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-8)

    x = rng.normal(size=(20_000, d)) * np.sqrt(v1) + mu1
    y = rng.normal(size=(20_000, d)) * np.sqrt(v2) + mu2
    assert frechet_distance(x, y) == pytest.approx(closed, rel=0.02, abs=0.01)
    assert frechet_distance(y, x) == pytest.approx(frechet_distance(x, y), rel=1e-9)


def test_fd_full_covariance_matches_scipy_sqrtm():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(2)
    d = 8
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    covmean = sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_fd_singular_covariance_stays_real_and_exact():
    # Fewer samples than dimensions: a rank-deficient covariance, where sqrtm goes complex.
    rng = np.random.default_rng(3)
    a = rng.normal(size=(6, 20))
    shift = np.full(20, 0.5)
    fd = frechet_distance(a, a + shift)
    assert math.isfinite(fd)
    assert fd == pytest.approx(np.sum(shift**2), rel=1e-6)


# ----------------------------------------------------------------------------- KID


def _mmd2_by_loops(x: np.ndarray, y: np.ndarray) -> float:
    m, d = x.shape
    k = lambda u, v: (u @ v / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_definition_on_whole_sets():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(25, 3)), rng.normal(size=(25, 3)) + 0.2
    mean, std = kernel_inception_distance(x, y, subsets=3, subset_size=1000)
    assert mean == pytest.approx(_mmd2_by_loops(x, y), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-12)  # every subset is the whole set


def test_kid_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    mean, std = kernel_inception_distance(a, b, subsets=20, subset_size=500)
    assert abs(mean) < 3 * std + 1e-4
    shifted_mean, shifted_std = kernel_inception_distance(a, b + 0.3, subsets=20, subset_size=500)
    assert shifted_mean > 0.1 and shifted_mean > 5 * shifted_std
    assert kernel_inception_distance(a, b + 0.3, subsets=20, subset_size=500) == (shifted_mean, shifted_std)


# ----------------------------------------------------------------------------- PRDC


def test_prdc_hand_computed_example():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [10.0]])
    # k=1 radii: every real point 1.0; both fake points 9.5.
    got = precision_recall_density_coverage(real, fake, k=1)
    assert got == pytest.approx({"precision": 0.5, "recall": 1.0, "density": 1.0, "coverage": 0.5})


def test_prdc_identical_and_far_sets():
    rng = np.random.default_rng(6)
    real = rng.normal(size=(400, 8))
    same = precision_recall_density_coverage(real, real.copy(), k=5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    assert 0.8 < same["density"] < 1.5

    far = precision_recall_density_coverage(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}

    fresh = precision_recall_density_coverage(real, rng.normal(size=(400, 8)), k=5)
    assert fresh["precision"] > 0.7 and fresh["recall"] > 0.7 and fresh["coverage"] > 0.9
    assert 0.7 < fresh["density"] < 1.3


def test_prdc_half_of_the_modes_gives_half_recall():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(10, 16)) * 50.0
    real = np.concatenate([c + rng.normal(size=(60, 16)) for c in centres])
    fake = np.concatenate([c + rng.normal(size=(120, 16)) for c in centres[:5]])
    got = precision_recall_density_coverage(real, fake, k=5)
    assert got["recall"] == pytest.approx(0.5, abs=0.06)
    assert got["coverage"] == pytest.approx(0.5, abs=0.06)
    assert got["precision"] > 0.8


def test_prdc_chunking_gives_the_same_answer(monkeypatch):
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(150, 4)), rng.normal(size=(120, 4)) + 0.3
    whole = precision_recall_density_coverage(real, fake, k=3)
    monkeypatch.setattr(distances, "_BLOCK_ELEMENTS", 500)  # a few rows per block
    assert precision_recall_density_coverage(real, fake, k=3) == whole


def test_prdc_too_few_samples_is_a_user_error():
    with pytest.raises(GentoolError, match="k=5"):
        precision_recall_density_coverage(np.zeros((5, 2)), np.zeros((10, 2)), k=5)


# ----------------------------------------------------------------------------- images in


def test_hit_share_is_an_exact_count_over_a_count():
    """1,800 hits of 2,000 is 0.9 exactly (a float32 mean says 0.89999998 and misses a >= 0.9
    target): tensors, arrays and lists alike; NaN for nothing; mismatched lengths refused."""
    from gentool.metrics import hit_share

    truth = torch.arange(2000) % 10
    pred = truth.clone()
    pred[:200] = (pred[:200] + 1) % 10
    assert (pred == truth).float().mean().item() < 0.9  # what the old float32 mean said
    assert hit_share(pred, truth) == 0.9
    assert hit_share(pred.numpy().astype(np.int32), truth.numpy()) == 0.9
    assert hit_share([1, 2, 3, 4], [1, 2, 0, 0]) == 0.5
    assert math.isnan(hit_share(torch.zeros(0), torch.zeros(0)))
    with pytest.raises(ValueError, match="shape"):
        hit_share(pred[:10], truth)


def test_prepare_images_scales_converts_and_refuses_tanh_range():
    u8 = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    u8[:, 0] = 0
    grey = prepare_images(u8, 1, (4, 4))
    assert grey.shape == (2, 1, 4, 4) and torch.allclose(grey, torch.full_like(grey, 2 / 3))
    blocks = prepare_images(torch.arange(16.0).reshape(1, 1, 4, 4) / 15, 1, (2, 2), antialias=True)
    assert torch.allclose(blocks * 15, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))  # 2x2 means
    rgb = prepare_images(torch.rand(2, 1, 5, 7), 3, (6, 6))
    assert rgb.shape == (2, 3, 6, 6) and torch.equal(rgb[:, 0], rgb[:, 2])
    with pytest.raises(GentoolError, match=r"\[0, 1\]"):
        prepare_images(torch.rand(2, 1, 4, 4) * 2 - 1, 1, (4, 4))


class PoolExtractor(FeatureExtractor):
    """A tiny deterministic extractor: 4x4 average-pooled grey pixels (16-d)."""

    name = "pool4"
    dim = 16
    in_channels = 1
    input_size = (4, 4)
    antialias = True

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_compute_image_metrics_is_json_ready_and_batches_consistently():
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (120, 3, 12, 12), dtype=torch.uint8, generator=g)
    ext = PoolExtractor()
    np.testing.assert_allclose(ext.features(real, batch_size=7), ext.features(real), rtol=1e-6)
    out = compute_image_metrics(real, real.clone(), ext, k=3, kid_subsets=5)
    assert json.loads(json.dumps(out)) == out
    assert set(out) == {
        "features", "n_real", "n_fake", "fd", "kid_mean", "kid_std",
        "precision", "recall", "density", "coverage",
    }
    assert out["features"] == "pool4" and out["n_real"] == out["n_fake"] == 120
    assert out["fd"] < 1e-9 and out["precision"] == out["recall"] == out["coverage"] == 1.0
    darker = (real.float() * 0.5).to(torch.uint8)
    worse = compute_image_metrics(real, darker, ext, k=3, kid_subsets=5)
    assert worse["fd"] > 1.0 and worse["kid_mean"] > 0.01 and worse["precision"] < 0.2


# ----------------------------------------------------------------------------- gentool-cnn


def make_shapes(per_class: int, seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey images of 3 classes: filled square, plus sign, hollow ring; random place and size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    imgs, labels = [], []
    for label in range(3):
        for _ in range(per_class):
            r = rng.uniform(3.0, 5.0)
            cy, cx = rng.uniform(r + 1, size - r - 1, 2)
            if label == 0:
                m = (np.abs(yy - cy) <= r * 0.8) & (np.abs(xx - cx) <= r * 0.8)
            elif label == 1:
                m = ((np.abs(yy - cy) <= 1.0) & (np.abs(xx - cx) <= r)) | ((np.abs(xx - cx) <= 1.0) & (np.abs(yy - cy) <= r))
            else:
                dist = np.hypot(yy - cy, xx - cx)
                m = (dist <= r) & (dist >= r - 1.8)
            img = m * rng.uniform(0.7, 1.0) + rng.normal(0, 0.05, m.shape)
            imgs.append(np.clip(img, 0, 1))
            labels.append(label)
    x = torch.from_numpy((np.stack(imgs)[:, None] * 255).round().astype(np.uint8))
    return x, torch.tensor(labels, dtype=torch.int64)


@pytest.fixture(scope="module")
def shapes_cache(tmp_path_factory):
    """A cache folder holding the extractor trained on the shapes data, and the data set."""
    cache = tmp_path_factory.mktemp("cache")
    x, y = make_shapes(64, seed=0)
    ds = FakeDataset(x, y, ["square", "plus", "ring"], "shapes")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENTOOL_CACHE", str(cache))
        mp.delenv("GENTOOL_EXTRACTORS", raising=False)  # the cache's own extractors/ folder is under test
        mp.setattr(features, "MIN_TRAIN_IMAGES", 6000)  # 32 epochs of 192 images: ~2 s
        ext = get_extractor(None, ds)
    return cache, ds, ext


def test_default_extractor_is_cached_with_metadata(shapes_cache, monkeypatch):
    monkeypatch.delenv("GENTOOL_EXTRACTORS", raising=False)
    cache, ds, first = shapes_cache
    files = list((cache / "extractors").glob("*.safetensors"))
    assert [f.name for f in files] == [f"{first.fingerprint}.safetensors"]
    assert len(first.fingerprint) == 16
    assert first.name == f"gentool-cnn[shapes:{first.fingerprint[:8]}]"
    assert first.dim == 128

    from safetensors import safe_open

    with safe_open(str(files[0]), framework="pt") as f:
        meta = json.loads(f.metadata()["gentool"])
    assert meta["data_name"] == "shapes" and meta["shape"] == [192, 1, 16, 16]
    assert meta["num_classes"] == 3 and meta["epochs"] == math.ceil(6000 / 192) and meta["train_accuracy"] > 0.9

    monkeypatch.setenv("GENTOOL_CACHE", str(cache))

    def no_training(*a, **k):
        raise AssertionError("the cached extractor was retrained")

    monkeypatch.setattr(features, "train_cnn", no_training)
    mtime = files[0].stat().st_mtime_ns
    again = get_extractor("gentool-cnn", ds)
    assert files[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.features(ds.images[:20]), first.features(ds.images[:20]))

    other = FakeDataset(ds.images[1:], ds.labels[1:], ds.class_names, "shapes")
    with pytest.raises(AssertionError, match="retrained"):  # other data -> other fingerprint
        get_extractor(None, other)


def test_default_extractor_classifies_and_separates_classes(shapes_cache):
    _, ds, ext = shapes_cache
    x_new, y_new = make_shapes(30, seed=123)
    assert (ext.predict(x_new) == y_new.numpy()).mean() > 0.9
    assert ext.classifier(x_new).shape == (90, 3)
    assert ext.accuracy > 0.9

    # Nearest class centroid in feature space (no classifier head involved).
    train_f = ext.features(ds.images)
    centroids = np.stack([train_f[ds.labels.numpy() == c].mean(0) for c in range(3)])
    new_f = ext.features(x_new)
    nearest = np.argmin(((new_f[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest == y_new.numpy()).mean() > 0.9

    # The same pictures as float RGB at twice the size (pixels repeated) give the same features.
    rgb_big = (x_new.float() / 255).repeat_interleave(2, 2).repeat_interleave(2, 3).repeat(1, 3, 1, 1)
    np.testing.assert_allclose(ext.features(rgb_big), new_f, rtol=1e-4, atol=1e-4)

    # A mode-collapsed "generator" (squares only) is told apart from fresh real data.
    fresh = compute_image_metrics(ds.images, x_new, ext, kid_subsets=10)
    collapsed = compute_image_metrics(ds.images, x_new[y_new == 0], ext, kid_subsets=10)
    assert collapsed["fd"] > 3 * fresh["fd"]
    assert collapsed["recall"] < fresh["recall"] - 0.3
    assert collapsed["coverage"] < fresh["coverage"] - 0.3


def test_cnn_training_is_deterministic():
    x, y = make_shapes(10, seed=1)
    net_a, acc_a, _ = features.train_cnn(x, y, 3, side=16, epochs=2, seed=0)
    net_b, acc_b, _ = features.train_cnn(x, y, 3, side=16, epochs=2, seed=0)
    net_c, _, _ = features.train_cnn(x, y, 3, side=16, epochs=2, seed=1)
    sd_a, sd_b, sd_c = net_a.state_dict(), net_b.state_dict(), net_c.state_dict()
    assert acc_a == acc_b
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert not torch.equal(sd_a["head.weight"], sd_c["head.weight"])


def test_unlabelled_data_trains_on_rotations(tmp_path, monkeypatch):
    monkeypatch.setenv("GENTOOL_CACHE", str(tmp_path))
    monkeypatch.delenv("GENTOOL_EXTRACTORS", raising=False)
    monkeypatch.setattr(features, "MIN_TRAIN_IMAGES", 6000)
    # An asymmetric "L" in colour, so the rotation is recognisable.
    rng = np.random.default_rng(9)
    imgs = np.zeros((96, 3, 12, 12), dtype=np.uint8)
    for i in range(96):
        top, left = rng.integers(0, 4, 2)
        h, w = rng.integers(6, 9, 2)
        imgs[i, :, top : top + h, left : left + 2] = rng.integers(150, 256, (3, 1, 1))
        imgs[i, :, top + h - 2 : top + h, left : left + w] = rng.integers(150, 256, (3, 1, 1))
    ds = FakeDataset(torch.from_numpy(imgs), None, None, "ells")
    ext = get_extractor(None, ds)
    assert ext.task == "rotation" and ext.num_classes == 4
    assert ext.accuracy > 0.6  # chance is 0.25
    assert ext.features(ds.images).shape == (96, 128)
    with pytest.raises(GentoolError, match="without labels"):
        ext.predict(ds.images)
    assert (tmp_path / "extractors" / f"{ext.fingerprint}.safetensors").is_file()


def test_unknown_extractor_and_missing_reference_are_user_errors():
    with pytest.raises(GentoolError, match="unknown feature extractor"):
        get_extractor("vgg", None)
    with pytest.raises(GentoolError, match="reference"):
        get_extractor(None, None)


# ----------------------------------------------------------------------------- inception


def test_inception_has_the_fid_architecture_size():
    # torchvision's inception_v3 has 27,161,264 parameters; less AuxLogits (3,326,696) and
    # fc (2,049,000) leaves the 21,785,568 of the feature trunk.
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == 21_785_568


def test_inception_pools_ignore_padding_like_tensorflow():
    from gentool.metrics.inception import _avg_pool_no_pad

    net = FIDInceptionV3()
    # The FID graph's average pools divide by the unpadded window, so a constant map stays constant.
    assert torch.equal(_avg_pool_no_pad(torch.ones(1, 2, 5, 5)), torch.ones(1, 2, 5, 5))
    assert (net.Mixed_7b.pool, net.Mixed_7c.pool) == ("avg", "max")


@pytest.fixture(scope="module")
def random_inception_file(tmp_path_factory):
    torch.manual_seed(0)
    state = FIDInceptionV3().state_dict()
    state["fc.weight"] = torch.randn(1008, 2048) * 0.01
    state["fc.bias"] = torch.zeros(1008)
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("inception") / "random_inception.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path, state


def test_inception_features_from_safetensors(random_inception_file, monkeypatch):
    path, _ = random_inception_file
    ext = get_extractor(f"inception:{path}", None)
    assert ext.dim == 2048 and "inception" in ext.name
    grey_small = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    f = ext.features(grey_small, batch_size=2)
    assert f.shape == (3, 2048) and np.isfinite(f).all() and f.std() > 0

    monkeypatch.setenv("GENTOOL_INCEPTION_WEIGHTS", str(path))
    assert get_extractor("inception", None).features(grey_small[:1]).shape == (1, 2048)


def test_inception_weight_errors_are_clear(random_inception_file, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    path, state = random_inception_file
    monkeypatch.delenv("GENTOOL_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(GentoolError, match="GENTOOL_INCEPTION_WEIGHTS") as e:
        get_extractor("inception", None)
    assert "\n" not in str(e.value) and "safetensors" in str(e.value)
    with pytest.raises(GentoolError, match="not found"):
        get_extractor(f"inception:{tmp_path / 'nope.safetensors'}", None)

    partial = {k: v for k, v in state.items() if not k.startswith("Mixed_7c")}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(GentoolError, match=r"missing \d+ of \d+ tensors \(Mixed_7c"):
        get_extractor(f"inception:{tmp_path / 'partial.safetensors'}", None)

    tv = dict(state, **{"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    save_file(tv, str(tmp_path / "torchvision.safetensors"))
    with pytest.raises(GentoolError, match="torchvision"):
        get_extractor(f"inception:{tmp_path / 'torchvision.safetensors'}", None)

    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(GentoolError, match="cannot read"):
        get_extractor(f"inception:{tmp_path / 'garbage.safetensors'}", None)


# ----------------------------------------------------------------------------- real MNIST


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.mark.slow
def test_default_extractor_on_mnist_reaches_97_percent(tmp_path, monkeypatch):
    if not (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"MNIST not found at {MNIST_DIR}")
    monkeypatch.setenv("GENTOOL_CACHE", str(tmp_path))
    monkeypatch.delenv("GENTOOL_EXTRACTORS", raising=False)  # it times a training from scratch
    train = FakeDataset(
        torch.from_numpy(_read_idx(MNIST_DIR / "train-images-idx3-ubyte.gz").copy()).unsqueeze(1),
        torch.from_numpy(_read_idx(MNIST_DIR / "train-labels-idx1-ubyte.gz").astype(np.int64)),
        [str(i) for i in range(10)],
        "mnist",
    )
    t0 = time.perf_counter()
    ext = get_extractor(None, train)
    seconds = time.perf_counter() - t0
    test_x = torch.from_numpy(_read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz").copy()).unsqueeze(1)
    test_y = _read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    accuracy = float((ext.predict(test_x) == test_y).mean())
    print(f"gentool-cnn on MNIST: test accuracy {accuracy:.4f}, trained in {seconds:.1f} s (CPU)")
    assert accuracy > 0.97
