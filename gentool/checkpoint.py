"""Self-describing safetensors checkpoints, written atomically, read without pickle.

One ``.safetensors`` file holds a model's weights (``<module>.<parameter>`` tensors) and, in the
header's ``__metadata__``, a ``gentool`` JSON document: model name, plugin and versions, the full
config, the training options, the data's shape and class names, step, epoch and metrics. That is
enough to sample from the file with nothing else. ``last`` checkpoints also carry the training
state for ``--resume`` (optimizers, schedulers, RNG, position in the epoch) as tensors under
``__train__/`` plus JSON, so weights and state can never disagree: one file, one atomic rename.

The header is parsed with the standard library (``gentool info`` needs no torch), and every file
is validated before safetensors touches it: pickles and PyTorch zip files are refused outright.
"""

from __future__ import annotations

import json
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from gentool.errors import CheckpointError
from gentool.io import write_atomic  # noqa: F401  (re-exported: its old home)

if TYPE_CHECKING:
    import torch

FORMAT = "gentool-checkpoint/1"


TRAIN_PREFIX = "__train__/"
_MAX_HEADER = 100 * 1024 * 1024


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and validate a safetensors header; return it (tensor entries and ``__metadata__``).

    Raises :class:`CheckpointError` with a clear reason for missing files, pickles, PyTorch zip
    archives, truncated or otherwise malformed files.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        if n < 2 or n > _MAX_HEADER or 8 + n > size:
            if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
                raise CheckpointError(
                    f"{path} is a pickle or PyTorch zip file, not safetensors: gentool never unpickles files"
                )
            if len(head) < 8:
                raise CheckpointError(f"{path} is not a safetensors file (only {size} bytes)")
            raise CheckpointError(f"{path} is not a safetensors file (bad or truncated header)")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} is not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (header is not a JSON object)")
    data_len = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not offsets or len(offsets) != 2 or offsets[1] > data_len or offsets[0] > offsets[1]:
            raise CheckpointError(f"{path} is truncated or corrupt (tensor {name!r} lies outside the file)")
    return header


@dataclass
class Checkpoint:
    """A validated gentool checkpoint: its metadata now, its tensors when asked for."""

    path: Path
    meta: dict[str, Any]
    tensor_shapes: dict[str, tuple[list[int], str]] = field(default_factory=dict)

    # -- metadata ---------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self.meta["model"]

    @property
    def plugin(self) -> str:
        return self.meta.get("plugin", "")

    @property
    def config(self) -> dict[str, Any]:
        """The model config as saved (a dict; rebuild with ``gentool.config.config_from_dict``)."""
        return self.meta.get("config", {})

    @property
    def data(self) -> dict[str, Any]:
        """What the model was trained on: name, kind, shape, count, class names."""
        return self.meta.get("data", {})

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))

    @property
    def epoch(self) -> int:
        return int(self.meta.get("epoch", 0))

    @property
    def metrics(self) -> dict[str, Any]:
        return self.meta.get("metrics", {})

    @property
    def extra(self) -> dict[str, Any]:
        """What the task's ``checkpoint_meta()`` stored (e.g. a tokenizer's vocabulary)."""
        return self.meta.get("extra") or {}

    @property
    def has_train_state(self) -> bool:
        return any(k.startswith(TRAIN_PREFIX) for k in self.tensor_shapes) or "train_state" in self.meta

    def parameter_counts(self) -> dict[str, int]:
        """Number of trainable parameters per module (recorded at save time; buffers excluded)."""
        recorded = self.meta.get("parameters")
        if isinstance(recorded, dict):
            return {k: int(v) for k, v in recorded.items()}
        counts: dict[str, int] = {}  # a file without the record: count every stored value
        for name, (shape, _dtype) in self.tensor_shapes.items():
            if name.startswith(TRAIN_PREFIX):
                continue
            n = 1
            for d in shape:
                n *= d
            module = name.split(".", 1)[0]
            counts[module] = counts.get(module, 0) + n
        return counts

    # -- tensors ----------------------------------------------------------------------------
    def tensors(self, prefix: str = "", *, device: str = "cpu") -> dict[str, "torch.Tensor"]:
        """The tensors whose names start with ``prefix`` (all of them by default), read lazily."""
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="pt", device=device) as fh:
                return {k: fh.get_tensor(k) for k in fh.keys() if k.startswith(prefix)}
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read tensors of {self.path}: {exc}") from None

    def state_dict(self, module: str, *, device: str = "cpu") -> dict[str, "torch.Tensor"]:
        """The weights of one module, keys relative to it."""
        prefix = module + "."
        return {k[len(prefix):]: v for k, v in self.tensors(prefix, device=device).items()}

    def load_into(self, modules: Mapping[str, "torch.nn.Module"], *, strict: bool = True) -> None:
        """Load the weights into ``modules`` (name -> module, the names used at save time)."""
        for name, module in modules.items():
            sd = self.state_dict(name)
            if not sd and strict:
                raise CheckpointError(f"{self.path} has no weights for module {name!r}")
            try:
                module.load_state_dict(sd, strict=strict)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0]
                raise CheckpointError(
                    f"{self.path} does not fit this model's {name!r} network: {first}"
                ) from None


def load_checkpoint(path: str | os.PathLike, *, model: str | None = None) -> Checkpoint:
    """Open a gentool checkpoint, refusing anything else.

    ``model`` (if given) must match the model the checkpoint was trained as.
    """
    path = Path(path)
    header = read_header(path)
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT or "gentool" not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a gentool checkpoint (no gentool metadata)")
    try:
        meta = json.loads(metadata["gentool"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path} has corrupt gentool metadata") from None
    if not isinstance(meta, dict) or "model" not in meta:
        raise CheckpointError(f"{path} has corrupt gentool metadata (no model name)")
    if model is not None and meta["model"] != model:
        raise CheckpointError(
            f"{path} is a checkpoint of model {meta['model']!r} (plugin {meta.get('plugin', '?')}), not {model!r}"
        )
    shapes = {k: (v["shape"], v["dtype"]) for k, v in header.items() if k != "__metadata__"}
    return Checkpoint(path=path, meta=meta, tensor_shapes=shapes)


def save_checkpoint(
    path: str | os.PathLike,
    modules: Mapping[str, "torch.nn.Module"],
    meta: Mapping[str, Any],
    *,
    train_state: tuple[dict[str, "torch.Tensor"], dict[str, Any]] | None = None,
) -> Path:
    """Save ``modules``' weights with ``meta`` (and optional training state) atomically.

    ``meta`` must hold at least ``model``; versions and a timestamp are added. ``train_state`` is
    ``(tensors, json_doc)`` as made by :func:`pack_state`.
    """
    from safetensors.torch import save

    import gentool

    tensors: dict[str, torch.Tensor] = {}
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in modules.items()}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().to("cpu").contiguous()
    doc = {"gentool_version": gentool.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "parameters": counts, **meta}
    if train_state is not None:
        state_tensors, state_doc = train_state
        for key, value in state_tensors.items():
            tensors[TRAIN_PREFIX + key] = value.detach().to("cpu").contiguous()
        doc["train_state"] = state_doc
    _dedupe_shared(tensors)
    payload = save(tensors, metadata={"format": FORMAT, "gentool": json.dumps(doc)})
    write_atomic(path, payload)
    return Path(path)


def _dedupe_shared(tensors: dict[str, "torch.Tensor"]) -> None:
    """safetensors refuses tensors sharing memory (tied weights): give each its own copy."""
    seen: set[int] = set()
    for key, value in tensors.items():
        ptr = value.untyped_storage().data_ptr() if value.numel() else -1
        if ptr in seen:
            tensors[key] = value.clone()
        elif ptr != -1:
            seen.add(ptr)


# -- nested state (optimizers, schedulers, RNG) <-> tensors + JSON, without pickle ----------
def pack_state(obj: Any, prefix: str = "") -> tuple[dict[str, "torch.Tensor"], Any]:
    """Split a nested structure into tensors and a JSON document that points at them.

    Dicts, lists, tuples, numbers, strings, None and tensors are supported; tuples and non-string
    dict keys are kept exact so :func:`unpack_state` gives back the same structure.
    """
    import torch

    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x
            return {"__tensor__": path}
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {"__dict__": {k: walk(v, f"{path}/{k}") for k, v in x.items()}}
            return {"__items__": [[walk(k, f"{path}/k{i}"), walk(v, f"{path}/{i}")] for i, (k, v) in enumerate(x.items())]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{path}/{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if hasattr(x, "item") and hasattr(x, "dtype"):  # numpy scalars
            return x.item()
        raise TypeError(f"cannot save {type(x).__name__} at {path or '/'} in a checkpoint")

    doc = walk(obj, prefix)
    return tensors, doc


def unpack_state(doc: Any, tensors: Mapping[str, "torch.Tensor"]) -> Any:
    """Inverse of :func:`pack_state`."""

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            if "__tensor__" in x:
                return tensors[x["__tensor__"]]
            if "__dict__" in x:
                return {k: walk(v) for k, v in x["__dict__"].items()}
            if "__items__" in x:
                return {walk(k): walk(v) for k, v in x["__items__"]}
            if "__tuple__" in x:
                return tuple(walk(v) for v in x["__tuple__"])
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(doc)
