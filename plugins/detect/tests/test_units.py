"""Unit checks of the detector's parts: NPR, metrics, temperature scaling, tiling, file reading,
data layouts, the plugin contract."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import gentool_detect
from gentool_detect import metrics
from gentool_detect.calibrate import fit_temperature
from gentool_detect.npr import npr
from gentool_detect.tiling import tile_boxes, tiles


def test_npr_is_zero_on_nearest_upsampled_images_only():
    small = torch.rand(2, 3, 8, 8)
    up = small.repeat_interleave(2, -2).repeat_interleave(2, -1)
    assert npr(up).abs().max() == 0
    assert npr(torch.rand(2, 3, 16, 16)).abs().mean() > 0.1
    assert npr(torch.rand(1, 1, 7, 9)).shape == (1, 1, 7, 9)  # odd sides


def test_metrics_agree_with_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = y * 0.7 + rng.normal(size=500)
    s[:50] = np.round(s[:50])  # ties
    assert metrics.auc(y, s) == pytest.approx(sk.roc_auc_score(y, s))
    assert metrics.average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s))
    assert metrics.eer(y, y.astype(float)) == 0 and metrics.eer(y, 1.0 - y) == 1
    fpr, tpr, _ = sk.roc_curve(y, s)
    assert metrics.eer(y, s) == pytest.approx(np.min(np.maximum(fpr, 1 - tpr)), abs=1e-9)
    assert metrics.auc(np.ones(5), np.arange(5)) is None


def test_calibration_undoes_overconfidence_and_a_shift():
    rng = np.random.default_rng(1)
    true_logit = rng.normal(scale=2.0, size=4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    over = 3.0 * true_logit  # an overconfident detector
    t, b = fit_temperature(over, y, bias=False)
    assert t == pytest.approx(3.0, rel=0.15) and b == 0
    before = metrics.ece(y, 1 / (1 + np.exp(-over)))
    after = metrics.ece(y, 1 / (1 + np.exp(-over / t)))
    assert after < before / 2 and after < 0.03
    shifted = 3.0 * (true_logit - 1.5)  # overconfident and biased towards "real"
    t, b = fit_temperature(shifted, y)
    assert t == pytest.approx(3.0, rel=0.15) and b == pytest.approx(1.5, abs=0.2)
    assert metrics.ece(y, 1 / (1 + np.exp(-(shifted / t + b)))) < 0.03
    t, b = fit_temperature(np.r_[-np.ones(50), np.ones(50)], np.r_[np.zeros(50), np.ones(50)])  # separable
    assert 0.01 <= t < 0.2


def test_tiles_cover_a_large_image_and_pad_a_small_one():
    boxes = tile_boxes(100, 70, 32)
    covered = np.zeros((100, 70), bool)
    for t, left in boxes:
        covered[t: t + 32, left: left + 32] = True
    assert covered.all() and len(boxes) == 4 * 3
    assert len(tile_boxes(2000, 2000, 32, max_tiles=50)) == 50
    t, b = tiles(torch.rand(3, 20, 40), 32)
    assert t.shape == (2, 3, 32, 32) and b == [(0, 0), (0, 8)]
    photo = torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8)  # uint8: cut first, then floats
    assert torch.equal(tiles(photo, 32)[0], tiles(photo.float() / 255, 32)[0])


def test_bad_files_are_named_errors(tmp_path):
    from gentool_detect.imageio import ImageReadError, open_image

    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(good)
    assert open_image(good).size == (48, 40)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:2000])
    (tmp_path / "text.jpg").write_text("not an image")
    for name, why in (("trunc.png", "cannot decode"), ("text.jpg", "not an image"), ("missing.png", "no such file")):
        with pytest.raises(ImageReadError, match=why):
            open_image(tmp_path / name)
    rgba = tmp_path / "alpha.png"
    Image.new("RGBA", (5, 5), (0, 0, 0, 0)).save(rgba)
    assert open_image(rgba).getpixel((0, 0)) == (255, 255, 255)  # composited on white


def test_layouts_real_fake_and_cnndetection(tmp_path):
    from gentool_detect.data import layout

    for cat in ("cat", "car"):
        for sub in ("0_real", "1_fake"):
            (tmp_path / "cnn" / cat / sub).mkdir(parents=True)
    assert [(r.parent.name, f.name) for r, f in layout(tmp_path / "cnn")] == [("car", "1_fake"), ("cat", "1_fake")]
    (tmp_path / "flat" / "real").mkdir(parents=True)
    import gentool

    with pytest.raises(gentool.DataError, match="no fake"):
        layout(tmp_path / "flat")
    assert layout(tmp_path) is None


def test_hf_fake_label_is_found():
    from gentool_detect.scorers import fake_index

    assert fake_index({0: "real", 1: "fake"}) == 1
    assert fake_index({0: "AI-generated", 1: "human"}) == 0
    assert fake_index({"0": "LABEL_0", "1": "LABEL_1"}) == 1


def test_plugin_imports_only_the_facade_and_no_torch():
    from gentool.testing import assert_imports_only_the_facade

    assert_imports_only_the_facade(gentool_detect.__file__)
    code = "import sys, gentool_detect.plugin; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("inp,spectrum", [("npr", True), ("pixels", False), ("pixels", True)])
def test_network_variants_take_any_size(inp, spectrum):
    from gentool_detect.network import DetectorNet

    net = DetectorNet(3, inp, spectrum, width=4).eval()
    for shape in ((2, 3, 16, 16), (1, 3, 28, 20)):
        z = net(torch.rand(*shape))
        assert z.shape == (shape[0],) and torch.isfinite(z).all()
    assert ("spec" in dict(net.named_children())) == spectrum


def test_pool_from_a_nested_cnndetection_folder_is_split_by_group(tmp_path):
    import gentool
    from gentool_detect.configs import DetectorConfig
    from gentool_detect.data import build_pool, split

    rng = np.random.default_rng(0)
    counts = {("biggan", "0_real"): 20, ("biggan", "1_fake"): 12, ("crn", "0_real"): 20, ("crn", "1_fake"): 8}
    for (group, sub), n in counts.items():
        (tmp_path / group / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / group / sub / f"{i}.png")
    real = gentool.load_dataset(str(tmp_path), split="train")
    cfg = DetectorConfig()
    pool = build_pool(real, cfg, str(tmp_path), seed=0)
    assert pool.generators == ["biggan", "crn"]
    assert int((pool.labels == 0).sum()) == 40 and int((pool.source == 0).sum()) == 12
    assert int((pool.source == 1).sum()) == 8
    parts = split(pool, cfg, seed=0)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(pool)))  # a partition
    assert set(pool.source[parts["test"]].tolist()) == {-1, 0, 1}  # every group is in the test part


def test_occlusion_finds_the_region_that_drives_the_score():
    from gentool_detect.explain import occlusion_map
    from gentool_detect.scorers import Score

    class BrightCorner:  # "generated" = how bright the top-left quarter is
        def score(self, img):
            a = np.asarray(img, dtype=np.float64)
            return Score(float(a[: a.shape[0] // 2, : a.shape[1] // 2].mean() / 255))

    arr = np.zeros((64, 64, 3), np.uint8)
    arr[:16, :16] = 255
    heat = occlusion_map(BrightCorner(), Image.fromarray(arr))
    assert heat[:16, :16].min() == 1.0 and heat[32:, :].max() == 0.0
