"""Fetching the named data sets into the cache: mirrors, md5 checks, atomic writes, offline mode.

Files land in ``cache_dir()/datasets/<name>/``. A download goes to a hidden temporary file
in that folder and is renamed into place only after its md5 matches, so an interrupted or
corrupted download never looks like a usable file. ``GENTOOL_OFFLINE=1`` forbids any network
access; ``GENTOOL_DATA_MIRROR`` replaces the public mirrors with one URL prefix (files are
fetched from ``<prefix>/<name>/<file>``; a ``file://`` prefix works, which is how the tests
exercise this path without a network).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

from gentool.errors import DataError
from gentool.paths import cache_dir

#: Public mirrors per data set, tried in order (each a URL prefix ending in "/").
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
    "cifar10": [
        "https://www.cs.toronto.edu/~kriz/",
    ],
}

#: md5 of every file we download, per data set.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {
        # The binary version: plain bytes, no pickle.
        "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
    },
}

_TIMEOUT_S = 60
_CHUNK = 1 << 20


def dataset_dir(name: str) -> Path:
    """The cache folder for a named data set: ``cache_dir()/datasets/<name>``."""
    return cache_dir() / "datasets" / name


def is_offline() -> bool:
    """True when ``GENTOOL_OFFLINE`` is set to 1/true/yes/on."""
    return os.environ.get("GENTOOL_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _urls(name: str, filename: str) -> list[str]:
    mirror = os.environ.get("GENTOOL_DATA_MIRROR", "").strip()
    if mirror:
        return [f"{mirror.rstrip('/')}/{name}/{filename}"]
    return [prefix + filename for prefix in MIRRORS.get(name, [])]


def _offline_error(name: str, folder: Path, what: str) -> DataError:
    return DataError(f"could not download {name} (offline?): put {what} in {folder} or pass --data /path/to/folder")


class _ChecksumMismatch(Exception):
    pass


def _download_one(url: str, dest: Path, md5: str) -> None:
    """Stream ``url`` into a temp file beside ``dest``, check md5, then rename into place."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        got = digest.hexdigest()
        if got != md5:
            raise _ChecksumMismatch(f"checksum mismatch for {url}: md5 {got}, expected {md5}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(name: str, filenames: list[str], what: str) -> Path:
    """Make sure ``filenames`` of data set ``name`` are in its cache folder; return the folder.

    Missing files are downloaded (unless offline) and md5-checked against :data:`CHECKSUMS`.
    ``what`` completes the offline hint, e.g. "the four IDX files". Raises :class:`DataError`
    when offline, on a network failure, or on a checksum mismatch (the bad file is removed).
    """
    folder = dataset_dir(name)
    missing = [f for f in filenames if not (folder / f).is_file()]
    if not missing:
        return folder
    if is_offline():
        raise _offline_error(name, folder, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data cache folder {folder}: {exc.strerror or exc}") from exc
    sums = CHECKSUMS[name]
    for filename in missing:
        dest = folder / filename
        mismatch: str | None = None
        for url in _urls(name, filename):
            print(f"downloading {name}: {url}", file=sys.stderr, flush=True)
            try:
                _download_one(url, dest, sums[filename])
                break
            except _ChecksumMismatch as exc:
                mismatch = str(exc)
            except (OSError, http.client.HTTPException, ValueError):
                continue
        else:
            if mismatch:
                raise DataError(f"{mismatch}; the bad download was removed (try again, or put the file in {folder})")
            raise _offline_error(name, folder, what)
    return folder
