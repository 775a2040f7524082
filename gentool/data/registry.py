"""Named data sets and :func:`load_dataset`, the one entry point the CLI and plugins call.

``--data`` takes either a name (built in, or registered by a plugin through ``extra``) or a
path; the path's layout decides the reader. Names win over paths: write ``./digits`` for a
folder that happens to be called like a named set.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Mapping, Union

from gentool.data.datasets import ImageDataset, TextDataset, check_split
from gentool.data.names import BUILTIN_DATASET_NAMES
from gentool.data.spec import DatasetSpec
from gentool.data.transforms import check_channels, check_image_size, finish
from gentool.errors import DataError, PluginError


def _load_digits(**kwargs: object) -> ImageDataset:
    from gentool.data.digits import load_digits

    return load_digits(**kwargs)  # type: ignore[arg-type]


def _load_mnist(**kwargs: object) -> ImageDataset:
    from gentool.data.mnist import load_mnist

    return load_mnist(**kwargs)  # type: ignore[arg-type]


def _load_fashion_mnist(**kwargs: object) -> ImageDataset:
    from gentool.data.mnist import load_fashion_mnist

    return load_fashion_mnist(**kwargs)  # type: ignore[arg-type]


def _load_cifar10(**kwargs: object) -> ImageDataset:
    from gentool.data.cifar import load_cifar10

    return load_cifar10(**kwargs)  # type: ignore[arg-type]


BUILTIN_DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "digits",
            "scikit-learn's 1,797 handwritten digits, 8x8 grey, 10 classes (embedded, no download)",
            _load_digits,
        ),
        DatasetSpec(
            "mnist",
            "MNIST handwritten digits, 28x28 grey, 60,000 train / 10,000 test (downloaded once)",
            _load_mnist,
        ),
        DatasetSpec(
            "fashion-mnist",
            "Fashion-MNIST clothing, 28x28 grey, 10 classes, 60,000 train / 10,000 test (downloaded once)",
            _load_fashion_mnist,
        ),
        DatasetSpec(
            "cifar10",
            "CIFAR-10 photos, 32x32 colour, 10 classes, 50,000 train / 10,000 test (downloaded once, 170 MB)",
            _load_cifar10,
        ),
    )
}
assert tuple(BUILTIN_DATASETS) == BUILTIN_DATASET_NAMES, "gentool.data.names lists the built-in names"


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _find_spec(spec: str, registries: list[Mapping[str, DatasetSpec]]) -> DatasetSpec | None:
    key = _normalise(spec)
    for reg in registries:
        for name, ds in reg.items():
            if _normalise(name) == key:
                return ds
    return None


def _unknown(spec: str, names: list[str]) -> DataError:
    close = difflib.get_close_matches(_normalise(spec), [_normalise(n) for n in names], n=3, cutoff=0.6)
    originals = {_normalise(n): n for n in names}
    hint = f" (did you mean {' or '.join(repr(originals[c]) for c in close)}?)" if close else ""
    return DataError(
        f"unknown data set {spec!r}: not a known name nor an existing file or folder{hint}; "
        f"known names: {', '.join(sorted(names))}"
    )


def _load_path(
    path: Path, spec: str, split: str, image_size: int | None, channels: int | None
) -> ImageDataset | TextDataset:
    """Pick the reader for an existing file or folder from its layout or extension."""
    from gentool.data import cifar, folder, idx, npz, text

    if path.is_dir():
        if idx.is_idx_dir(path):
            return idx.load_idx_dir(path, split, name=spec)
        if cifar.is_cifar_dir(path):
            return cifar.load_cifar10_binary(path, split, name=spec)
        if not folder.is_image_folder(path):
            exts = " ".join(sorted(folder.IMAGE_EXTENSIONS))
            raise DataError(f"no images in folder {path} (looked for {exts}, IDX files, CIFAR-10 .bin batches)")
        return folder.load_image_folder(path, split, name=spec, image_size=image_size, channels=channels)
    suffix = path.suffix.lower()
    lower = path.name.lower()
    if suffix == ".npz":
        return npz.load_npz(path, split, name=spec)
    if idx.is_idx_file(path):
        return idx.load_idx_file(path, name=spec)
    if suffix in text.TEXT_EXTENSIONS:
        return text.load_text(path, split, name=spec)
    if lower.endswith((".tar.gz", ".tgz", ".tar")) and "cifar" in lower:
        return cifar.load_cifar10_binary(path, split, name=spec)
    if suffix in folder.IMAGE_EXTENSIONS:
        raise DataError(f"{path} is a single image: pass the folder that holds the images")
    raise DataError(
        f"cannot load data from {path}: expected an image folder, an IDX folder or file, a .npz, "
        "a CIFAR-10 binary archive, or a .txt/.md text file"
    )


def load_dataset(
    spec: str | None,
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    extra: Mapping[str, DatasetSpec] | None = None,
    default: str = "digits",
) -> Union[ImageDataset, TextDataset]:
    """Load the data set that ``spec`` names (``None`` -> ``default``).

    ``spec`` is a name from ``extra`` (plugins' data sets; None: those of the installed plugins,
    so a plugin finds another's by name) or :data:`BUILTIN_DATASETS`,
    matched case-insensitively, else a path: a folder of IDX files, an image folder (class
    subfolders, optionally under ``train/`` and ``test/``), a ``.npz``, a single IDX file, a
    CIFAR-10 binary archive or folder, or a ``.txt``/``.md`` file. ``split`` is "train",
    "test" or "all". For images, ``image_size`` resizes and center-crops to a square and
    ``channels`` (1 or 3) converts grey <-> colour. User mistakes raise :class:`DataError`.
    """
    split = check_split(split)
    if image_size is not None:
        check_image_size(image_size)
    if channels is not None:
        check_channels(channels)
    spec = default if spec is None else str(spec)
    if extra is None:
        from gentool.registry_access import get_registry

        extra = get_registry().datasets
    try:
        return _load(spec, split, image_size, channels, extra, default)
    except MemoryError as exc:  # the checks before each allocation should make this rare
        raise _out_of_memory(spec, image_size) from exc
    except RuntimeError as exc:  # torch's allocator says it this way
        if "allocate memory" not in str(exc):
            raise
        raise _out_of_memory(spec, image_size) from exc


def _out_of_memory(spec: str, image_size: int | None) -> DataError:
    at = f" at image size {image_size}" if image_size is not None else ""
    return DataError(f"not enough memory to load {spec}{at}: use a smaller --image-size or a smaller data set")


def _load(spec: str, split: str, image_size: int | None, channels: int | None,
          extra: Mapping[str, DatasetSpec] | None, default: str) -> Union[ImageDataset, TextDataset]:
    if not spec.strip():
        spec = default
    registries: list[Mapping[str, DatasetSpec]] = [extra or {}, BUILTIN_DATASETS]
    found = _find_spec(spec, registries)
    if found is not None:
        ds = found.loader(split=split, image_size=image_size, channels=channels)
        if not isinstance(ds, (ImageDataset, TextDataset)):
            raise PluginError(
                f"the loader of data set {found.name!r} returned {type(ds).__name__}, "
                "not an ImageDataset or TextDataset"
            )
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            names = sorted({n for reg in registries for n in reg})
            raise _unknown(spec, names)
        ds = _load_path(path, spec, split, image_size, channels)
    if isinstance(ds, ImageDataset):
        ds = finish(ds, image_size, channels)
    return ds


def load_data(ref: str, modality: str, split: str, image_size: int | None, reg: Any, channels: int | None = None) -> Any:
    """Load ``ref`` (a name or path) for a model of ``modality`` with ``reg``'s data sets too; refuse
    the other modality."""
    dataset = load_dataset(ref, split=split, image_size=image_size, channels=channels, extra=reg.datasets)
    kind = dataset.info().get("kind")
    if kind != modality:
        raise DataError(f"{ref} is {kind} data, but this model needs {modality} data")
    return dataset
