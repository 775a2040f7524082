"""Behaviour of gentool.data that a user would notice: shapes, labels, conversions, clear errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import tarfile
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gentool.data import BUILTIN_DATASETS, DatasetSpec, ImageDataset, TextDataset, load_dataset
from gentool.data import download
from gentool.errors import DataError, PluginError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.exists():
        pytest.skip(f"../shared/data not present: {path} is missing")
    return path


# ----------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_folder(folder: Path, n_train: int, n_test: int, gz: bool = True) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for what, idx, arr in (("images", "idx3", images), ("labels", "idx1", labels)):
            name = f"{prefix}-{what}-{idx}-ubyte"
            data = idx_bytes(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
            arrays[f"{prefix}-{what}"] = arr
    return arrays


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def save(img: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty gentool cache, online-by-default but with no usable mirror configured."""
    root = tmp_path / "cache"
    monkeypatch.setenv("GENTOOL_CACHE", str(root))
    monkeypatch.delenv("GENTOOL_OFFLINE", raising=False)
    monkeypatch.delenv("GENTOOL_DATA_MIRROR", raising=False)
    return root


# ----------------------------------------------------------------------------- digits


def test_digits_is_the_default_and_splits_partition_the_1797_images():
    train = load_dataset(None)
    test = load_dataset("digits", split="test")
    every = load_dataset("DIGITS", split="all")
    assert isinstance(train, ImageDataset) and train.name == "digits"
    assert train.images.dtype == torch.uint8 and train.shape == (1, 8, 8)
    assert train.num_classes == 10 and train.class_names == [str(i) for i in range(10)]
    assert len(train) + len(test) == len(every) == 1797
    assert 0 < len(test) < len(train)
    # values 0..16 scaled to the full 0..255 range
    assert int(every.images.min()) == 0 and int(every.images.max()) == 255
    # train and test are a partition of "all" (as multisets of (image, label) rows)
    def rows(ds):
        return Counter(bytes(img.numpy().tobytes()) + bytes([int(lab)]) for img, lab in zip(ds.images, ds.labels))

    assert rows(train) + rows(test) == rows(every)
    assert set(train.labels.tolist()) == set(test.labels.tolist()) == set(range(10))
    x = train.as_float()
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) == 1.0
    info = json.loads(json.dumps(train.info()))
    assert info == {
        "name": "digits", "kind": "image", "shape": [1, 8, 8], "count": len(train),
        "num_classes": 10, "class_names": [str(i) for i in range(10)],
    }  # fmt: skip


def test_image_size_and_channels_apply_to_any_source():
    ds = load_dataset("digits", split="test", image_size=16, channels=3)
    assert ds.shape == (3, 16, 16) and len(ds) == len(load_dataset("digits", split="test"))
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])  # grey repeated into RGB
    sub = ds.subset([0, 2, 4])
    assert len(sub) == 3 and torch.equal(sub.images[1], ds.images[2]) and sub.labels[1] == ds.labels[2]


def test_resize_center_crops_non_square_images(tmp_path):
    # 8 wide x 16 high: two black rows on top, two white rows at the bottom, grey 100 between
    img = np.zeros((2, 16, 8), dtype=np.uint8)
    img[:, 2:14] = 100
    img[:, 14:] = 255
    np.savez(tmp_path / "tall.npz", x=img)
    ds = load_dataset(str(tmp_path / "tall.npz"), image_size=4)
    assert ds.shape == (1, 4, 4)
    # width 8 -> 4 halves the height to 8, and the center crop keeps only the grey band
    assert torch.all(ds.images == 100)


# ----------------------------------------------------------------------------- shared data


def test_mnist_idx_folder_from_shared_data():
    folder = shared("mnist")
    train = load_dataset(str(folder))
    test = load_dataset(str(folder), split="test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.shape == (1, 28, 28) and train.class_names == [str(i) for i in range(10)]
    assert int(train.labels[0]) == 5  # the famous first MNIST digit
    for ds, lo, hi in ((train, 5000, 7000), (test, 800, 1200)):
        counts = torch.bincount(ds.labels, minlength=10)
        assert len(counts) == 10 and int(counts.min()) >= lo and int(counts.max()) <= hi
    # digits are bright strokes on a black background
    assert float(train.as_float()[:1000].mean()) < 0.2 and int(train.images.max()) == 255
    big = load_dataset(str(folder), split="test", image_size=32, channels=3)
    assert big.shape == (3, 32, 32) and len(big) == 10000


def test_single_idx_file_finds_its_labels():
    folder = shared("mnist")
    ds = load_dataset(str(folder / "t10k-images-idx3-ubyte.gz"))
    assert len(ds) == 10000 and ds.labels is not None and ds.num_classes == 10


def test_cifar_subset_image_folder_from_shared_data():
    folder = shared("cifar10-subset")
    train = load_dataset(str(folder))
    test = load_dataset(str(folder), split="test")
    assert len(train) == 4000 and len(test) == 1000
    assert train.shape == (3, 32, 32) == test.shape
    assert train.class_names == test.class_names == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ]  # fmt: skip
    assert sorted(Counter(train.labels.tolist())) == list(range(10))
    assert min(Counter(train.labels.tolist()).values()) > 300
    # the pixels are the PNG's pixels, in sorted class/file order
    first = sorted((folder / "train" / "airplane").glob("*.png"))[0]
    assert torch.equal(train.images[0], torch.from_numpy(np.array(Image.open(first))).permute(2, 0, 1))
    small = load_dataset(str(folder), split="test", image_size=16, channels=1)
    assert small.shape == (1, 16, 16)


def test_text_file_from_shared_data():
    path = str(shared("text/tinyshakespeare.txt"))
    ds = load_dataset(path, split="all")
    assert isinstance(ds, TextDataset)
    assert ds.info()["kind"] == "text" and ds.info()["chars"] == 1115394 and ds.info()["vocab_size"] == 65
    train, test = load_dataset(path), load_dataset(path, split="test")  # 90/10, test is the end of the file
    assert len(train.text) == 1003854 and train.text + test.text == ds.text


# ----------------------------------------------------------------------------- untidy folders


def test_mixed_modes_and_sizes_become_one_rgb_tensor(tmp_path):
    d = tmp_path / "mixed"
    save(Image.new("L", (10, 10), 100), d / "a_grey.png")
    save(Image.new("RGB", (10, 10), (255, 0, 0)).convert("P"), d / "b_palette.png")
    save(Image.new("RGBA", (10, 10), (0, 0, 255, 0)), d / "c_transparent.png")  # -> white
    save(Image.new("RGBA", (10, 10), (0, 0, 0, 128)), d / "d_half_black.png")  # -> 127 grey
    save(Image.new("CMYK", (10, 10), (0, 255, 255, 0)), d / "e_cmyk.tif")  # -> red
    save(Image.fromarray(np.full((10, 10), 257 * 40, dtype=np.uint16)), d / "f_16bit.png")
    save(Image.new("L", (20, 20), 7), d / "g_big.png")  # odd size: resized to the common 10x10
    save(Image.new("L", (10, 20), 9), d / "h_tall.png")  # non-square: center-cropped
    assert Image.open(d / "f_16bit.png").mode == "I;16"
    ds = load_dataset(str(d))
    assert ds.labels is None and ds.class_names is None and len(ds) == 8
    assert ds.shape == (3, 10, 10)  # colour because some images are colour
    px = ds.images[:, :, 5, 5].tolist()
    assert px[0] == [100, 100, 100]
    assert px[1] == [255, 0, 0]
    assert px[2] == [255, 255, 255]
    assert px[3] == [127, 127, 127]
    assert px[4] == [255, 0, 0]
    assert px[5] == [40, 40, 40]  # 16-bit scaled by 1/257, not clipped to 255
    assert px[6] == [7, 7, 7] and px[7] == [9, 9, 9]


def test_all_grey_modes_give_one_channel(tmp_path):
    d = tmp_path / "grey"
    values = np.array([[0, 257 * 40, 65535, 65535]] * 4, dtype=np.uint16)
    save(Image.frombytes("I;16B", (4, 4), values.astype(">u2").tobytes()), d / "a.tif")
    save(Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)), d / "b.tif")  # F in [0, 1]
    save(Image.new("1", (4, 4), 1), d / "c.png")
    save(Image.new("LA", (4, 4), (0, 0)), d / "d.png")  # fully transparent -> white
    save(Image.new("L", (4, 4), 33), d / "e.pgm")
    ds = load_dataset(str(d))
    assert ds.shape == (1, 4, 4)
    assert ds.images[0, 0, 0].tolist() == [0, 40, 255, 255]
    assert ds.images[1:, 0, 0, 0].tolist() == [128, 255, 255, 33]
    rgb = load_dataset(str(d), channels=3)
    assert rgb.shape == (3, 4, 4) and rgb.images[4, :, 0, 0].tolist() == [33, 33, 33]


def test_class_subfolders_and_train_test_layout(tmp_path):
    d = tmp_path / "pets"
    for split, classes in (("train", ["cat", "dog", "eel"]), ("test", ["dog", "eel"])):
        for c in classes:
            for i in range(2):
                save(Image.new("RGB", (6, 6), (i, 0, 0)), d / split / c / f"{i}.jpg")
    train = load_dataset(str(d))
    test = load_dataset(str(d), split="test")
    both = load_dataset(str(d), split="all")
    assert train.class_names == test.class_names == ["cat", "dog", "eel"]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert test.labels.tolist() == [1, 1, 2, 2]  # "dog" keeps index 1 although test has no cats
    assert len(both) == 10 and train.info()["num_classes"] == 3
    with pytest.raises(DataError, match="no test split"):
        (d / "only").mkdir()
        save(Image.new("L", (4, 4)), d / "only" / "train" / "x" / "0.png")
        load_dataset(str(d / "only"), split="test")


def test_truncated_png_names_the_file(tmp_path):
    d = tmp_path / "imgs"
    save(Image.new("L", (8, 8), 1), d / "good.png")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    bad = d / "broken.png"
    bad.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_dataset(str(d))


def test_text_renamed_to_png_names_the_file(tmp_path):
    d = tmp_path / "imgs"
    save(Image.new("L", (8, 8), 1), d / "good.png")
    (d / "notes.png").write_text("this is not an image\n")
    with pytest.raises(DataError) as err:
        load_dataset(str(d))
    assert str(d / "notes.png") in str(err.value) and "\n" not in str(err.value)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (its pixel data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    d = tmp_path / "bomb"
    d.mkdir()
    (d / "huge.png").write_bytes(_png_claiming(100_000, 100_000))  # 69 bytes claiming 10^10 pixels
    with pytest.raises(DataError, match="huge.png.*(bomb|limit)"):
        load_dataset(str(d))
    # just over the limit (only a warning in PIL) is refused too
    d2 = tmp_path / "over"
    save(Image.new("L", (10, 10)), d2 / "a.png")
    save(Image.new("L", (12, 12)), d2 / "b.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 120)
    with pytest.raises(DataError, match=r"b\.png.*(bomb|limit)"):
        load_dataset(str(d2))


def test_empty_folder_and_folder_without_images(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images in folder .*empty"):
        load_dataset(str(empty))
    (empty / "README.txt").write_text("hello")
    with pytest.raises(DataError, match="no images in folder .*empty"):
        load_dataset(str(empty))


def test_stray_files_warn_but_hidden_files_do_not(tmp_path):
    d = tmp_path / "imgs"
    save(Image.new("L", (4, 4), 1), d / "a.png")
    (d / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_dataset(str(d))) == 1
    (d / "README.txt").write_text("about these images")
    with pytest.warns(UserWarning, match=r"1 non-image file .*README\.txt"):
        assert len(load_dataset(str(d))) == 1


# ----------------------------------------------------------------------------- npz, idx, text


@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHW", "float"])
def test_npz_round_trip(tmp_path, layout):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 3, 6, 7), dtype=np.uint8)
    if layout == "NHW":
        images = images[:, :1]
    stored = {"NHWC": images.transpose(0, 2, 3, 1), "NCHW": images, "NHW": images[:, 0]}.get(layout)
    if layout == "float":
        stored = images.transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    labels = np.array([0, 1, 2, 1, 0])
    path = tmp_path / "data.npz"
    np.savez(path, images=stored, labels=labels, class_names=np.array(["a", "b", "c"]))
    ds = load_dataset(str(path))
    assert torch.equal(ds.images, torch.from_numpy(images))
    assert ds.labels.tolist() == labels.tolist() and ds.class_names == ["a", "b", "c"]


def test_npz_keras_style_splits(tmp_path):
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=np.zeros((4, 5, 5), np.uint8), y_train=np.arange(4),
             x_test=np.full((2, 5, 5), 9, np.uint8), y_test=np.arange(2))  # fmt: skip
    assert len(load_dataset(str(path))) == 4
    test = load_dataset(str(path), split="test")
    assert len(test) == 2 and int(test.images.max()) == 9
    assert len(load_dataset(str(path), split="all")) == 6


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="pickle"):
        load_dataset(str(path))


def test_npz_float_out_of_range_is_refused(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.full((2, 4, 4), 3.0, np.float32))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_dataset(str(tmp_path / "f.npz"))


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_and_truncated_idx(tmp_path, gz):
    folder = tmp_path / "idx"
    arrays = write_idx_folder(folder, n_train=6, n_test=3, gz=gz)
    ds = load_dataset(str(folder))
    assert torch.equal(ds.images[:, 0], torch.from_numpy(arrays["train-images"]))
    assert ds.labels.tolist() == arrays["train-labels"].tolist()
    assert len(load_dataset(str(folder), split="test")) == 3
    # cut the train images short
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    data = idx_bytes(arrays["train-images"])[:-100]
    (folder / name).write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError, match=f"truncated IDX file .*{name}"):
        load_dataset(str(folder))
    # a gzip stream cut in the middle
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(arrays["train-images"]))[:200])
    (folder / "train-images-idx3-ubyte").unlink(missing_ok=True)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_dataset(str(folder))


def test_text_errors(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt.*UTF-8"):
        load_dataset(str(bad))
    empty = tmp_path / "empty.md"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.md"):
        load_dataset(str(empty))


# ----------------------------------------------------------------------------- names and downloads


def test_unknown_name_suggests_the_closest(cache):
    with pytest.raises(DataError) as err:
        load_dataset("minst")
    msg = str(err.value)
    assert "did you mean 'mnist'" in msg and "cifar10" in msg and "fashion-mnist" in msg
    with pytest.raises(DataError, match="split"):
        load_dataset("digits", split="validation")


def test_plugin_datasets_via_extra():
    calls = []

    def loader(split, image_size, channels):
        calls.append((split, image_size, channels))
        return ImageDataset(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), None, None, "blank")

    extra = {"Blank": DatasetSpec("Blank", "three black squares", loader)}
    ds = load_dataset("blank", split="test", image_size=8, channels=3, extra=extra)
    assert calls == [("test", 8, 3)] and ds.shape == (3, 8, 8)
    extra = {"bad": DatasetSpec("bad", "broken plugin", lambda **kw: "oops")}
    with pytest.raises(PluginError, match="bad"):
        load_dataset("bad", extra=extra)
    assert set(BUILTIN_DATASETS) == {"digits", "mnist", "fashion-mnist", "cifar10"}


def _mnist_mirror(tmp_path: Path) -> tuple[str, dict[str, str]]:
    mirror = tmp_path / "mirror"
    arrays = write_idx_folder(mirror / "mnist", n_train=7, n_test=4)
    sums = {p.name: md5(p) for p in (mirror / "mnist").iterdir()}
    assert len(sums) == 4 and len(arrays) == 4
    return mirror.as_uri(), sums


def test_download_from_mirror_with_checksums(tmp_path, cache, monkeypatch):
    uri, sums = _mnist_mirror(tmp_path)
    monkeypatch.setenv("GENTOOL_DATA_MIRROR", uri)
    monkeypatch.setitem(download.CHECKSUMS, "mnist", sums)
    ds = load_dataset("mnist")
    assert ds.name == "mnist" and len(ds) == 7 and ds.shape == (1, 28, 28)
    assert len(load_dataset("mnist", split="test")) == 4
    folder = cache / "datasets" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(sums)  # no temp files left behind
    # once cached, no network is needed
    monkeypatch.setenv("GENTOOL_OFFLINE", "1")
    monkeypatch.setenv("GENTOOL_DATA_MIRROR", "file:///nonexistent")
    assert len(load_dataset("mnist", split="all")) == 11


def test_download_with_wrong_checksum_is_removed(tmp_path, cache, monkeypatch):
    uri, sums = _mnist_mirror(tmp_path)
    monkeypatch.setenv("GENTOOL_DATA_MIRROR", uri)
    monkeypatch.setitem(download.CHECKSUMS, "mnist", {k: "0" * 32 for k in sums})
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("mnist")
    folder = cache / "datasets" / "mnist"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_offline_and_unreachable_give_the_same_clear_message(tmp_path, cache, monkeypatch):
    folder = cache / "datasets" / "mnist"
    monkeypatch.setenv("GENTOOL_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        load_dataset("mnist")
    expected = f"could not download mnist (offline?): put the four IDX files in {folder} or pass --data /path/to/folder"
    assert str(err.value) == expected
    monkeypatch.delenv("GENTOOL_OFFLINE")
    monkeypatch.setenv("GENTOOL_DATA_MIRROR", (tmp_path / "no-such-mirror").as_uri())
    with pytest.raises(DataError) as err:
        load_dataset("mnist")
    assert str(err.value) == expected


def _cifar_archive(path: Path, per_batch: int = 2) -> None:
    def batch(offset: int) -> bytes:
        out = b""
        for i in range(per_batch):
            label = (offset + i) % 10
            planes = np.stack([np.full((32, 32), label, np.uint8), np.full((32, 32), 100, np.uint8),
                               np.full((32, 32), 200, np.uint8)])  # fmt: skip
            out += bytes([label]) + planes.tobytes()
        return out

    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": batch((i - 1) * per_batch) for i in range(1, 6)}
    members["cifar-10-batches-bin/test_batch.bin"] = batch(7)
    members["cifar-10-batches-bin/batches.meta.txt"] = "\n".join(
        ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck", ""]
    ).encode()
    members["../test_batch.bin"] = b"garbage that must be ignored"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("../test_batch.bin", members.pop("../test_batch.bin")), *members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_cifar10_binary_download_and_parse(tmp_path, cache, monkeypatch):
    archive = tmp_path / "mirror" / "cifar10" / "cifar-10-binary.tar.gz"
    _cifar_archive(archive)
    monkeypatch.setenv("GENTOOL_DATA_MIRROR", (tmp_path / "mirror").as_uri())
    monkeypatch.setitem(download.CHECKSUMS, "cifar10", {"cifar-10-binary.tar.gz": md5(archive)})
    train = load_dataset("cifar10")
    test = load_dataset("cifar10", split="test")
    assert (len(train), len(test)) == (10, 2) and train.shape == (3, 32, 32)
    assert train.class_names[:2] == ["plane", "car"] and len(train.class_names) == 10
    assert train.labels.tolist() == list(range(10))
    assert train.images[3, :, 0, 0].tolist() == [3, 100, 200]  # R, G, B planes in order
    assert test.labels.tolist() == [7, 8]
    assert (cache / "datasets" / "cifar10" / "cifar-10-binary.tar.gz").is_file()
