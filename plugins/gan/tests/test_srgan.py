"""srgan (issue 16): super-resolution that beats bicubic, two stages in one checkpoint, exact resume,
and ``gentool upscale`` on real files of any size and mode, tiled without seams, bad files answered
one by one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gan_testing import gentool
from PIL import Image

from gentool_gan import srgan
from gentool_gan.degrade import gaussian_blur, make_low_res, shrink, upscale_bicubic
from gentool_gan.srgan_config import SRGANConfig
from gentool_gan.srgan_sample import ssim
from gentool_gan.srgan_task import psnr
from gentool_gan.upscale import upscale_tiled

TINY = ("--set", "width=8", "--set", "blocks=2", "--set", "d_width=8", "--set", "val_images=50", "--batch-size", "32")


def _random_generator(blocks: int = 2, scale: int = 2, channels: int = 3) -> srgan.SRGenerator:
    torch.manual_seed(0)
    g = srgan.SRGenerator(channels, 8, blocks, scale)
    with torch.no_grad():
        for p in g.tail.parameters():
            p.normal_(0, 0.1)  # away from the bicubic start, so the network's reach matters
    return g.eval()


def test_generator_starts_at_bicubic_and_has_the_right_shape():
    g = srgan.SRGenerator(3, 8, 2, 4).eval()
    lr = torch.rand(2, 3, 6, 5)
    with torch.no_grad():
        out = g(lr)
    assert out.shape == (2, 3, 24, 20)
    torch.testing.assert_close(out, torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic"))


@pytest.mark.parametrize("tile", [7, 16, 40])
def test_tiles_give_the_untiled_result(tile):
    """Tiles read with the receptive radius as margin: the same output everywhere, seams included."""
    g = _random_generator()
    lr = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        whole = g(lr).clamp(0, 1)
    tiled, count = upscale_tiled(g, lr, 2, tile, srgan.receptive_radius(2, 2), torch.device("cpu"))
    assert count == -(-37 // tile) * -(-53 // tile) and count > 1
    assert (tiled - whole).abs().max() < 1e-4
    short, _ = upscale_tiled(g, lr, 2, tile, 1, torch.device("cpu"))  # too little margin: seams show
    assert (short - whole).abs().max() > 1e-3


def test_psnr_and_ssim_reward_the_truth():
    x = torch.rand(4, 3, 16, 16)
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    assert torch.all(psnr(x, x) > 90) and torch.allclose(ssim(x, x), torch.ones(4))
    assert torch.all(psnr(noisy, x) < 25) and torch.all(ssim(noisy, x) < 0.95)


def test_degradations_are_seeded_and_blur_blurs():
    hr = torch.rand(3, 3, 16, 16)
    torch.manual_seed(1)
    a = make_low_res(hr, 2, True)
    torch.manual_seed(1)
    b = make_low_res(hr, 2, True)
    assert a.shape == (3, 3, 8, 8) and torch.equal(a, b)
    assert not torch.equal(a, shrink(hr, 2))
    blurred = gaussian_blur(hr, torch.tensor([2.0, 2.0, 2.0]))
    assert blurred.std() < hr.std() and blurred.shape == hr.shape


def test_dihedral_gives_the_eight_symmetries_of_the_square():
    from gentool_gan.srgan_task import dihedral

    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    views = [dihedral(x, k) for k in range(8)]
    assert torch.equal(views[0], x)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8  # all different
    assert torch.equal(views[4], x.flip(-1)) and torch.equal(views[2], x.flip(-1).flip(-2))
    for v in views:  # the same pixels, moved: corners stay corners
        assert sorted(v.flatten().tolist()) == list(range(16))
        assert {float(v[0, 0, i, j]) for i in (0, 3) for j in (0, 3)} == {0.0, 3.0, 12.0, 15.0}


def test_config_is_checked():
    with pytest.raises(ValueError, match="scale must be 2, 4 or 8"):
        SRGANConfig(scale=3)
    with pytest.raises(ValueError, match="patch"):
        SRGANConfig(scale=8, patch=8)
    with pytest.raises(ValueError, match="adv_weight"):
        SRGANConfig(adv_weight=-1.0)


def test_adversarial_weight_defaults_by_scale_and_yields_to_the_users():
    assert [SRGANConfig(scale=s).adversarial_weight() for s in (2, 4, 8)] == [1e-4, 1e-3, 1e-3]
    assert SRGANConfig(scale=2, adv_weight=1e-3).adversarial_weight() == 1e-3
    assert SRGANConfig(scale=4, adv_weight=0.0).adversarial_weight() == 0.0


def test_srgan_trains_beats_bicubic_and_resumes_exactly(env, tmp_path):
    """On the embedded digits at x2, two epochs (one per stage): both stages beat bicubic PSNR on
    the test images, the checkpoint holds both generators, and a resume is bit-exact."""
    from gentool.testing import assert_resume_is_exact

    straight, _ = assert_resume_is_exact("srgan", *TINY, "--seed", "2", "-q", env=env, runs=tmp_path / "runs")
    keys = set(straight.tensors())
    assert any(k.startswith("g_pixel.") for k in keys) and any(k.startswith("d.") for k in keys)
    res = gentool("evaluate", "srgan", "-c", "straight", "--json", "--fd", "false", env=env)
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)["metrics"]
    assert m["psnr_pixel"] > m["psnr_bicubic"] + 1.0, m
    assert m["psnr_gan"] > m["psnr_bicubic"], m
    assert m["ssim_pixel"] > m["ssim_bicubic"], m
    res = gentool("sample", "srgan", "-c", "straight", "-n", "5", "-o", "s", "--stage", "pixel", env=env)
    assert res.returncode == 0, res.stderr
    assert len(list((tmp_path / "s").glob("0*.png"))) == 5 and (tmp_path / "s" / "compare.png").exists()
    with Image.open(tmp_path / "s" / "000000.png") as img:
        assert img.size == (8, 8)


def _srgan_checkpoint(path: Path, channels: int = 3) -> Path:
    """An untrained srgan checkpoint (random tail) for 16x16 images: enough to test ``upscale``."""
    from gentool.checkpoint import save_checkpoint
    from gentool.config import config_to_dict

    cfg = SRGANConfig(width=8, blocks=2, d_width=8, patch=16)
    g, d = srgan.build((channels, 16, 16), cfg)
    g.load_state_dict(_random_generator(channels=channels).state_dict())
    meta = {"model": "srgan", "plugin": "gan", "config": config_to_dict(cfg), "step": 1, "epoch": 1,
            "data": {"name": "digits", "shape": [channels, 16, 16], "kind": "image"}}
    return save_checkpoint(path, {"g": g, "d": d, "g_pixel": g}, meta)


def test_upscale_answers_every_file_and_keeps_going(env, tmp_path):
    ckpt = _srgan_checkpoint(tmp_path / "sr.safetensors")
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    (folder / "deep").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(folder / "photo.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA").save(folder / "deep" / "logo.png")
    Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8), "L").save(folder / "grey.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (folder / "notes.png").write_text("not an image")
    Image.new("L", (8000, 6000)).save(tmp_path / "huge.png")  # 48 MP: over the input limit
    res = gentool("upscale", str(folder), str(tmp_path / "huge.png"), str(tmp_path / "missing.png"),
                  "-c", str(ckpt), "--tile", "32", "-o", "up", env=env)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and "this is a bug" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 4, res.stderr
    assert any("broken.png: cannot decode" in e or "broken.png: not an image" in e for e in errors)
    assert any("huge.png: 8000x6000 is too large" in e for e in errors)
    assert any("missing.png: no such file" in e for e in errors)
    out = tmp_path / "up"
    with Image.open(out / "photo_x2.png") as img:
        assert img.size == (180, 140) and img.mode == "RGB"
    with Image.open(out / "logo_x2.png") as img:
        assert img.size == (60, 40) and img.mode == "RGBA"  # alpha kept
    with Image.open(out / "grey_x2.png") as img:
        assert img.size == (24, 24)
    assert "photo.png -> " in res.stdout and "tiles)" in res.stdout  # 90x70 in 32-pixel tiles


def test_upscale_json_and_bad_usage(env, tmp_path):
    ckpt = _srgan_checkpoint(tmp_path / "sr.safetensors")
    Image.new("RGB", (10, 10), (200, 10, 10)).save(tmp_path / "a.png")
    res = gentool("upscale", str(tmp_path / "a.png"), "-c", str(ckpt), "--json", "-o", "j", env=env)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout.splitlines()[0])
    assert doc["output_size"] == [20, 20] and doc["tiles"] == 1 and doc["stage"] == "gan"
    for args, words in ((["--stage", "best"], "--stage must be gan or pixel"), (["--tile", "2"], "--tile must be at least 8")):
        res = gentool("upscale", str(tmp_path / "a.png"), "-c", str(ckpt), *args, env=env)
        assert res.returncode == 1 and res.stderr.startswith("error:") and words in res.stderr, res.stderr
    res = gentool("train", "srgan", "--set", "scale=8", "--epochs", "1", env=env)
    assert res.returncode == 1 and "too small for scale 8" in res.stderr, res.stderr


def test_upscale_tool_answers_uploads_as_the_verb_does(env, tmp_path):
    """``gentool serve``'s upscale tool (``gentool.list_tools()``): for uploaded bytes, the same PNG
    (alpha kept) as ``gentool upscale`` writes for the file; a corrupt upload gets its one line and
    the next file is still answered."""
    from gentool import list_tools

    ckpt = _srgan_checkpoint(tmp_path / "sr.safetensors")
    Image.new("RGBA", (12, 9), (200, 10, 10, 128)).save(tmp_path / "a.png")
    res = gentool("upscale", str(tmp_path / "a.png"), "-c", str(ckpt), "-o", "u", env=env)
    assert res.returncode == 0, res.stderr
    tool = list_tools()["upscale"]
    answers = tool([("bad.png", b"\x89PNG broken"), ("a.png", (tmp_path / "a.png").read_bytes())],
                   {"checkpoint": str(ckpt)})
    assert answers[0].error and "\n" not in answers[0].error and answers[0].png is None
    assert answers[1].png == (tmp_path / "u" / "a_x2.png").read_bytes()
    assert answers[1].fields["output_size"] == [24, 18] and answers[1].fields["stage"] == "gan"
    with pytest.raises(Exception, match="stage"):
        tool([("a.png", b"")], {"checkpoint": str(ckpt), "stage": "best"})


def test_discriminate_through_the_core_uses_the_checkpoints_own_discriminator(tmp_path):
    """``gentool.load(ckpt).discriminate`` (what the detector plugin calls) gives the stored
    discriminator's logits; a wrong shape or range is refused in one line."""
    import gentool

    path = _srgan_checkpoint(tmp_path / "sr.safetensors")
    ckpt = gentool.load_checkpoint(path)
    cfg = gentool.config_from_dict(SRGANConfig, ckpt.config)
    d = srgan.build((3, 16, 16), cfg)[1]
    ckpt.load_into({"d": d}, strict=False)
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        expected = d.eval()(x)
    got = gentool.load(path, device="cpu").discriminate(x, batch_size=2)
    assert got.shape == (5,) and torch.allclose(got, expected, atol=1e-5)
    with pytest.raises(gentool.ConfigError, match=r"takes images of shape \[3, 16, 16\]"):
        gentool.load(path, device="cpu").discriminate(torch.rand(2, 3, 8, 8))
    with pytest.raises(gentool.ConfigError, match=r"in \[0, 1\]"):
        gentool.load(path, device="cpu").discriminate(x * 3)


def test_upscale_reads_16_bit_images_and_applies_exif_rotation(env, tmp_path):
    """A 16-bit grey PNG is scaled to 8 bits (as its 8-bit copy is), not clipped to white; a photo's
    EXIF rotation is applied."""
    ckpt = _srgan_checkpoint(tmp_path / "sr.safetensors", channels=1)
    ramp = np.tile(np.linspace(0, 65535, 40), (24, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    Image.fromarray(np.rint(ramp / 257.0).astype(np.uint8)).save(tmp_path / "eight.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to view
    Image.new("L", (30, 20), 100).save(tmp_path / "turned.jpg", exif=exif)
    res = gentool("upscale", str(tmp_path / "deep.png"), str(tmp_path / "eight.png"), str(tmp_path / "turned.jpg"),
                  "-c", str(ckpt), "-o", "up", env=env)
    assert res.returncode == 0, res.stderr
    with Image.open(tmp_path / "up" / "deep_x2.png") as a, Image.open(tmp_path / "up" / "eight_x2.png") as b:
        assert a.size == b.size == (80, 48)
        assert np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max() <= 1
    with Image.open(tmp_path / "up" / "turned_x2.png") as img:
        assert img.size == (40, 60)  # shown upright: 20x30, then x2
