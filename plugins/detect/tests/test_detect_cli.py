"""``gentool detect`` as a user runs it: per-file answers and errors, exit codes, tiles, JSON,
heatmaps, the no-detector message, a local transformers model, and checkpoint round trips."""

from __future__ import annotations

import json
import math
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from detect_testing import gentool_cli, make_env, nearest_fake
from PIL import Image


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def _bomb(path: Path) -> None:
    """A PNG whose header claims 30,000 x 30,000 pixels (over Pillow's limit)."""
    Image.new("L", (1, 1)).save(path)
    data = path.read_bytes()
    chunk = b"IHDR" + struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    path.write_bytes(data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:])


def test_trained_detector_separates_and_is_calibrated(trained):
    import gentool

    ckpt = gentool.load_checkpoint(trained["checkpoint"], model="detector")
    cal = ckpt.extra["calibration"]
    assert ckpt.extra["pool"]["generators"] == ["nearest"]
    assert ckpt.meta["metrics"]["val_auc"] > 0.9
    assert cal["temperature"] > 0 and cal["temperature"] != 1.0
    assert cal["ece_after"] <= cal["ece_before"]  # in-sample on the calib part: it cannot get worse


def test_mixed_good_and_bad_files_are_answered_per_file(trained, tmp_path):
    real = sorted((trained["data"] / "real").glob("*.png"))[:2]
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(real[0], folder / "a_real.png")
    shutil.copy(sorted((trained["data"] / "fake" / "nearest").glob("*.png"))[0], folder / "sub" / "b_fake.png")
    (folder / "c_trunc.png").write_bytes(real[1].read_bytes()[: len(real[1].read_bytes()) // 2])
    (folder / "d_text.jpg").write_text("hello")
    _bomb(folder / "e_bomb.png")
    (folder / "notes.txt").write_text("not an image extension: skipped in a folder")
    env = trained["env"]
    res = gentool_cli("detect", str(folder), "--checkpoint", str(trained["checkpoint"]), env=env)
    assert res.returncode == 4, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and "a_real.png" in lines[0] and "b_fake.png" in lines[1]
    errors = res.stderr.strip().splitlines()
    assert len(errors) == 3, res.stderr
    assert "c_trunc.png" in errors[0] and "d_text.jpg" in errors[1] and "bomb" in errors[2]
    assert all(e.startswith("error:") for e in errors) and "Traceback" not in res.stderr
    js = gentool_cli("detect", str(folder), "--json", "--checkpoint", str(trained["checkpoint"]), env=env)
    docs = _json_lines(js.stdout)
    assert js.returncode == 4 and len(docs) == 5
    answered = {Path(d["file"]).name: d for d in docs if "probability" in d}
    assert answered["a_real.png"]["verdict"] == "real" and answered["b_fake.png"]["verdict"] == "generated"
    assert sum("error" in d for d in docs) == 3
    from gentool_detect.command import run_detect

    assert run_detect([str(folder / "a_real.png"), str(folder / "sub")], str(trained["checkpoint"]), False, 0.5,
                      None, None, None) == 0


def test_threshold_changes_the_verdict_not_the_probability(trained, capsys):
    from gentool_detect.command import run_detect

    f = str(sorted((trained["data"] / "real").glob("*.png"))[0])
    docs = []
    for threshold in (0.0, 1.0):
        assert run_detect([f], str(trained["checkpoint"]), True, threshold, None, None, None) == 0
        docs += _json_lines(capsys.readouterr().out)
    lo, hi = docs
    assert lo["probability"] == hi["probability"] and lo["verdict"] == "generated" and hi["verdict"] == "real"


def test_large_photo_is_scored_by_tiles_at_its_own_resolution(trained, tmp_path):
    from gentool_detect.scorers import CheckpointScorer

    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, size=(40, 60, 3)).astype(np.uint8)
    real = np.asarray(Image.fromarray(base).resize((240, 160), Image.Resampling.BICUBIC))
    fake = nearest_fake(real)
    Image.fromarray(real).save(tmp_path / "real.png")
    Image.fromarray(fake).save(tmp_path / "fake.png")
    res = gentool_cli("detect", str(tmp_path), "--json", "-c", str(trained["checkpoint"]), "--explain",
                      str(tmp_path / "heat"), env=trained["env"])
    docs = {Path(d["file"]).name: d for d in _json_lines(res.stdout)}
    assert res.returncode == 0, res.stderr
    assert docs["real.png"]["tiles"] == 150 and docs["real.png"]["size"] == [240, 160]  # 15 x 10 tiles of 16
    assert docs["fake.png"]["probability"] > docs["real.png"]["probability"]
    assert "mean of calibrated tile logits" in docs["real.png"]["aggregation"]
    # the stated aggregation, recomputed by hand from the tiles
    scorer = CheckpointScorer(trained["checkpoint"])
    x = torch.from_numpy(fake).permute(2, 0, 1).float() / 255
    tiles = torch.stack([x[:, t: t + 16, s: s + 16] for t in range(0, 160, 16) for s in range(0, 240, 16)])
    with torch.no_grad():
        z = scorer.net(tiles) / scorer.net.temperature + scorer.net.bias
    assert docs["fake.png"]["probability"] == pytest.approx(1 / (1 + math.exp(-float(z.mean()))), abs=1e-5)
    heat = Image.open(docs["fake.png"]["heatmap"])
    assert heat.size == (240, 160)


def test_no_detector_names_the_three_ways(tmp_path):
    f = tmp_path / "x.png"
    Image.new("RGB", (16, 16)).save(f)
    res = gentool_cli("detect", str(f), env=make_env(tmp_path / "runs", tmp_path / "cache"))
    assert res.returncode == 1
    msg = res.stderr.strip()
    assert len(msg.splitlines()) == 1 and "gentool train detector" in msg and "gentool pull" in msg and "--model" in msg


def test_checkpoint_round_trip(trained, tmp_path, monkeypatch):
    import gentool

    with pytest.raises(gentool.ConfigError, match="does not generate"):
        gentool.load(trained["checkpoint"], device="cpu").sample(1, quiet=True)
    from gentool_detect.scorers import CheckpointScorer

    copy = tmp_path / "elsewhere.safetensors"
    shutil.copy(trained["checkpoint"], copy)
    a, b = CheckpointScorer(trained["checkpoint"]), CheckpointScorer(copy)
    ckpt = gentool.load_checkpoint(copy)
    assert float(b.net.temperature) == pytest.approx(ckpt.extra["calibration"]["temperature"], rel=1e-6)
    assert float(b.net.bias) == pytest.approx(ckpt.extra["calibration"]["bias"], rel=1e-6, abs=1e-7)
    assert b.net.input == "npr" and b.size == 16 and b.channels == 3
    img = Image.open(sorted((trained["data"] / "fake" / "nearest").glob("*.png"))[0])
    assert a.score(img).probability == b.score(img).probability
    ta, tb = a.net.state_dict(), b.net.state_dict()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    # a pulled detector (a local hub folder stands in for the Hugging Face Hub: nothing is downloaded)
    from gentool_detect.command import pick_scorer

    hub = tmp_path / "hub" / "me" / "det"
    hub.mkdir(parents=True)
    shutil.copy(trained["checkpoint"], hub / "model.safetensors")
    monkeypatch.setenv("GENTOOL_HUB_DIR", str(tmp_path / "hub"))
    monkeypatch.setenv("GENTOOL_CACHE", str(tmp_path / "cache"))
    pulled = pick_scorer("hf://me/det", None, None)
    assert pulled.score(img).probability == a.score(img).probability
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 20)
    res = gentool_cli("detect", str(img.filename), "-c", str(bad), env=trained["env"])
    assert res.returncode == 1 and "Traceback" not in res.stderr


def test_model_flag_with_a_local_tiny_transformers_model(tmp_path, monkeypatch, capsys):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, num_labels=2,
                                 id2label={0: "human", 1: "artificial"}, label2id={"human": 0, "artificial": 1})
    model = transformers.ViTForImageClassification(cfg).eval()
    folder = tmp_path / "tiny-vit"
    model.save_pretrained(folder)
    proc = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    proc.save_pretrained(folder)
    img_path = tmp_path / "p.png"
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    img.save(img_path)
    from gentool_detect.command import run_detect

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never download: the model is a local folder
    heat = tmp_path / "heat"
    assert run_detect([str(img_path)], None, True, 0.5, str(heat), None, str(folder)) == 0  # in-process: the
    doc = _json_lines(capsys.readouterr().out)[0]  # CLI's parsing is covered above; transformers loads once
    assert Image.open(doc["heatmap"]).size == (70 * 3, 50 * 3)  # occlusion map, enlarged (256 // 70 = 3x)
    with torch.no_grad():
        expected = torch.softmax(model(**proc(images=img, return_tensors="pt")).logits[0], 0)[1].item()
    assert doc["probability"] == pytest.approx(expected, abs=1e-5)
    assert "artificial" in doc["detector"] and doc["detector"].startswith("hf:")
    import gentool
    from gentool_detect.scorers import HFScorer

    with pytest.raises(gentool.ConfigError, match="--model"):
        HFScorer(str(tmp_path / "nothing-here"))


def test_evaluate_from_the_command_line(trained):
    res = gentool_cli("evaluate", "detector", "--json", "--logo-epochs", "0", "--robustness", "false", env=trained["env"])
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["metrics"]["auc"] > 0.9 and doc["metrics"]["test_fake"] == 45  # 15% of 300
    assert "auc_jpeg75" not in doc["metrics"] and "reliability_plot" in doc["settings"]


@pytest.mark.slow
def test_killed_mid_epoch_resumes_exactly(trained, tmp_path):
    from gentool.testing import assert_mid_epoch_resume_is_exact

    env = make_env(tmp_path / "runs", tmp_path / "cache")
    assert_mid_epoch_resume_is_exact("detector", "--data", str(trained["data"]), "--batch-size", "32", "--set", "width=4",
                                     "-q", env=env, runs=tmp_path / "runs", save_every=4, kill_at=8)
