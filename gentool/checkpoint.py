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
import stat
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from gentool.errors import CheckpointError, GentoolError
from gentool.io import write_atomic  # noqa: F401  (re-exported: its old home)

if TYPE_CHECKING:
    import torch

FORMAT = "gentool-checkpoint/1"


TRAIN_PREFIX = "__train__/"
_MAX_HEADER = 100 * 1024 * 1024


_MAX_DEPTH = 100  # JSON nesting allowed in the gentool metadata (training state is ~20 deep)
#: Bytes per element of the safetensors dtypes (the size of each tensor's data is checked against it).
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
                "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}


def _regular_file(path: Path) -> os.stat_result:
    """``path``'s stat if it is a regular file; a CheckpointError otherwise (before anything opens it:
    a FIFO would block a reader forever, a device never ends)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                "a character device" if stat.S_ISCHR(st.st_mode) else
                "a block device" if stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise CheckpointError(f"{path} is {kind}, not a checkpoint file")
    return st


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _too_deep(obj: Any, limit: int = _MAX_DEPTH) -> bool:
    """Whether ``obj`` (parsed JSON) nests lists/objects more than ``limit`` deep (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        x, depth = stack.pop()
        if isinstance(x, (dict, list)):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (x.values() if isinstance(x, dict) else x))
    return False


def _parse_json(raw: str | bytes, path: Path, what: str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise CheckpointError(f"{path} has corrupt {what} (JSON nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, and ints over Python's digit limit
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} has corrupt {what} ({reason})") from None


def _check_entry(path: Path, name: str, entry: Any, data_len: int) -> None:
    """One tensor's header entry: ``{"dtype": str, "shape": [int, ...], "data_offsets": [begin, end]}``."""
    bad = f"{path} is corrupt (tensor {name!r}"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{bad}: its header entry is not a JSON object)")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in entry:
            raise CheckpointError(f"{bad} has no {key})")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str):
        raise CheckpointError(f"{bad}: dtype {dtype!r} is not a string)")
    if not isinstance(shape, list) or len(shape) > 64 or not all(_is_int(d) and d >= 0 for d in shape):
        raise CheckpointError(f"{bad}: shape {_short(shape)} is not a list of sizes)")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) and o >= 0 for o in offsets):
        raise CheckpointError(f"{bad}: data_offsets {_short(offsets)} is not two byte offsets)")
    if offsets[1] > data_len or offsets[0] > offsets[1]:
        raise CheckpointError(f"{path} is truncated or corrupt (tensor {name!r} lies outside the file)")
    if dtype in _DTYPE_BYTES:
        n = 1
        for d in shape:
            n *= d
        if n * _DTYPE_BYTES[dtype] != offsets[1] - offsets[0]:
            raise CheckpointError(f"{bad}: shape {shape} of {dtype} needs {n * _DTYPE_BYTES[dtype]} bytes, "
                                  f"its data has {offsets[1] - offsets[0]})")


def _short(x: Any, limit: int = 60) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and validate a safetensors header; return it (tensor entries and ``__metadata__``).

    Raises :class:`CheckpointError` with a clear reason for missing files, folders, FIFOs and
    devices, pickles, PyTorch zip archives, truncated or otherwise malformed files: after it, every
    tensor entry has a string ``dtype``, a ``shape`` of sizes and ``data_offsets`` inside the file
    (that fit the shape), and ``__metadata__`` (if any) maps strings to strings.
    """
    path = Path(path)
    size = _regular_file(path).st_size
    try:  # O_NONBLOCK: should the path have become a FIFO since the check, opening it does not block
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise CheckpointError(f"{path} is not a regular file, not a checkpoint file")
        size = os.fstat(fh.fileno()).st_size
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
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not a safetensors file (header is not JSON)") from None
    try:
        header = json.loads(text)
    except RecursionError:
        raise CheckpointError(f"{path} is not a safetensors file (header JSON is nested too deeply)") from None
    except ValueError:
        raise CheckpointError(f"{path} is not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (header is not a JSON object)")
    data_len = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            if entry is None:
                continue
            if not isinstance(entry, dict):
                raise CheckpointError(f"{path} is corrupt (its __metadata__ is not a JSON object)")
            for key, value in entry.items():
                if not isinstance(value, str):
                    raise CheckpointError(f"{path} is corrupt (__metadata__ {key!r} is not a string)")
            continue
        _check_entry(path, name, entry, data_len)
    return header


def _check_meta(path: Path, meta: Any) -> dict[str, Any]:
    """The gentool metadata document, checked once so that nothing downstream meets a wrong type."""
    bad = f"{path} has corrupt gentool metadata"
    if not isinstance(meta, dict):
        raise CheckpointError(f"{bad} (a JSON {type(meta).__name__}, not an object)")
    if _too_deep(meta):
        raise CheckpointError(f"{bad} (JSON nested more than {_MAX_DEPTH} deep)")
    if "model" not in meta:
        raise CheckpointError(f"{bad} (no model name)")
    if not isinstance(meta["model"], str) or not meta["model"]:
        raise CheckpointError(f"{bad} (model name {_short(meta['model'])} is not a string)")
    for key in ("plugin", "plugin_version", "gentool_version", "family", "run", "created"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise CheckpointError(f"{bad} ({key} {_short(meta[key])} is not a string)")
    for key in ("config", "data", "metrics", "parameters", "train", "extra"):
        if key in meta and not isinstance(meta[key], dict) and not (key == "extra" and meta[key] is None):
            raise CheckpointError(f"{bad} ({key} is a {type(meta[key]).__name__}, not an object)")
    for key in ("step", "epoch"):
        if key in meta and not (_is_int(meta[key]) and meta[key] >= 0):
            raise CheckpointError(f"{bad} ({key} {_short(meta[key])} is not a whole number)")
    for module, count in (meta.get("parameters") or {}).items():
        if not _is_int(count) or count < 0:
            raise CheckpointError(f"{bad} (parameter count of {module!r} is {_short(count)}, not a whole number)")
    data = meta.get("data") or {}
    shape = data.get("shape")
    if shape is not None and not (isinstance(shape, list) and 0 < len(shape) <= 8
                                  and all(_is_int(d) and d > 0 for d in shape)):
        raise CheckpointError(f"{bad} (data shape {_short(shape)} is not a list of sizes)")
    names = data.get("class_names")
    if names is not None and not isinstance(names, list):
        raise CheckpointError(f"{bad} (class_names is a {type(names).__name__}, not a list)")
    if data.get("num_classes") is not None and not (_is_int(data["num_classes"]) and data["num_classes"] > 0):
        raise CheckpointError(f"{bad} (num_classes {_short(data['num_classes'])} is not a whole number)")
    return meta


def _fmt_shape(shape: Any) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _fit_problem(network: Mapping[str, Any], stored: Mapping[str, Any], *, strict: bool = True) -> str | None:
    """Why tensors of shapes ``stored`` (key -> shape) do not fit a network's ``network`` (key ->
    shape): the first missing key, the first unexpected key and the first shape mismatch, one line."""
    parts = []

    def first(keys: list[str], what: str) -> None:
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            parts.append(f"{what} {keys[0]!r}{more}")

    if strict:
        first([k for k in network if k not in stored], "missing")
        first([k for k in stored if k not in network], "unexpected")
    wrong = [k for k in network if k in stored and list(network[k]) != list(stored[k])]
    if wrong:
        k = wrong[0]
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        parts.append(f"{k!r} is {_fmt_shape(stored[k])} in the file but {_fmt_shape(network[k])} in the network{more}")
    return "; ".join(parts) or None


class _TooManyTensors(Exception):
    pass


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

    @classmethod
    def in_memory(cls, path: str | os.PathLike, meta: dict[str, Any],
                  tensors: Mapping[str, "torch.Tensor"]) -> "Checkpoint":
        """A checkpoint whose tensors are held in memory, not read from ``path``: what a plugin
        returns from ``gentool_open_checkpoint`` for a model file of another format (a GGUF, a
        Hugging Face folder) that it has read itself. ``meta`` as :func:`save_checkpoint` takes it
        (at least ``model``); tensor names carry the module prefix (``gpt.lm_head.weight``)."""
        shapes = {k: (list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in tensors.items()}
        return _MemoryCheckpoint(Path(path), dict(meta), shapes, dict(tensors))

    # -- tensors ----------------------------------------------------------------------------
    def tensors(self, prefix: str = "", *, device: str = "cpu") -> dict[str, "torch.Tensor"]:
        """The tensors whose names start with ``prefix`` (all of them by default), read lazily."""
        from safetensors import safe_open

        _regular_file(self.path)  # still a file (not swapped for a FIFO since it was opened)
        try:
            with safe_open(str(self.path), framework="pt", device=device) as fh:
                return {k: fh.get_tensor(k) for k in fh.keys() if k.startswith(prefix)}
        except Exception as exc:  # safetensors raises its own error types
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise CheckpointError(f"cannot read tensors of {self.path}: {reason}") from None

    def state_dict(self, module: str, *, device: str = "cpu") -> dict[str, "torch.Tensor"]:
        """The weights of one module, keys relative to it."""
        prefix = module + "."
        return {k[len(prefix):]: v for k, v in self.tensors(prefix, device=device).items()}

    def load_into(self, modules: Mapping[str, "torch.nn.Module"], *, strict: bool = True,
                  finite: bool = True) -> None:
        """Load the weights into ``modules`` (name -> module, the names used at save time).

        A network the weights do not fit is refused naming the first missing key, the first
        unexpected key and the first shape mismatch. With ``finite`` (the default), weights holding
        NaN or infinity (a diverged run: it would sample NaN pictures) are refused too, naming the
        first such tensor.
        """
        for name, module in modules.items():
            sd = self.state_dict(name)
            if not sd and strict:
                raise CheckpointError(f"{self.path} has no weights for module {name!r}")
            network = {k: tuple(v.shape) for k, v in module.state_dict().items()}
            problem = _fit_problem(network, {k: tuple(v.shape) for k, v in sd.items()}, strict=strict)
            if problem:
                raise CheckpointError(f"{self.path} does not fit this model's {name!r} network: {problem}")
            try:
                module.load_state_dict(sd, strict=strict)
            except RuntimeError as exc:
                reason = " ".join(str(exc).split())[:300]
                raise CheckpointError(
                    f"{self.path} does not fit this model's {name!r} network: {reason}"
                ) from None
            if finite:
                self._check_finite(name, module)

    def _check_finite(self, name: str, module: "torch.nn.Module") -> None:
        """Refuse parameters holding NaN or infinity, and buffers holding NaN (a buffer may hold -inf
        on purpose, e.g. an attention mask)."""
        import torch

        with torch.no_grad():
            for kind, items in (("parameters", module.named_parameters()), ("buffers", module.named_buffers())):
                for key, t in items:
                    if not (t.is_floating_point() or t.is_complex()) or t.device.type == "meta":
                        continue
                    nan = bool(torch.isnan(t).any())
                    inf = kind == "parameters" and not nan and not bool(torch.isfinite(t).all())
                    if nan or inf:
                        raise CheckpointError(
                            f"{self.path} holds non-finite weights: {name}.{key} contains "
                            f"{'NaN' if nan else 'infinity'} (a diverged run?); refusing to load it"
                        )

    def build(self, factory: Callable[[], Mapping[str, "torch.nn.Module"]]) -> dict[str, "torch.nn.Module"]:
        """Build the networks ``factory`` makes (name -> module, the names used at save time), check
        them against this file, then load its weights into them; return them.

        ``factory`` is first run on PyTorch's meta device (no memory): every state_dict key and shape
        must match the tensors stored under the module's name, so a config in the metadata that
        describes another network (a huge one, say) is refused with a :class:`CheckpointError`
        naming the first difference, before any real memory is allocated. Then it is run for real
        and :meth:`load_into` loads the weights (refusing non-finite ones).
        """
        import torch

        count = 0
        limit = 4 * len(self.tensor_shapes) + 10_000  # tensors and submodules a meta build may register

        def counter(*_args: Any) -> None:
            nonlocal count
            count += 1
            if count > limit:
                raise _TooManyTensors

        from torch.nn.modules import module as nn_module

        hooks = [nn_module.register_module_parameter_registration_hook(counter),
                 nn_module.register_module_buffer_registration_hook(counter),
                 nn_module.register_module_module_registration_hook(counter)]
        try:
            with torch.device("meta"):
                nets = factory()
        except GentoolError:  # a bad config value (ConfigError), ...
            raise
        except _TooManyTensors:
            raise CheckpointError(
                f"{self.path} does not fit its own metadata: the config describes a network with far more "
                f"tensors than the {len(self.tensor_shapes)} the file holds"
            ) from None
        except Exception as exc:  # e.g. a negative size in the config
            reason = (f"no {exc.args[0]!r} in its metadata" if isinstance(exc, KeyError) and exc.args
                      else f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
            raise CheckpointError(f"{self.path}: cannot build the network its metadata describes ({reason})") from None
        finally:
            for h in hooks:
                h.remove()
        if not isinstance(nets, Mapping) or not all(isinstance(m, torch.nn.Module) for m in nets.values()):
            raise TypeError("Checkpoint.build: the factory must return a mapping of names to modules")
        for name, net in nets.items():
            self._check_shapes(name, net)
        del nets
        nets = dict(factory())
        self.load_into(nets)
        return nets

    def _check_shapes(self, name: str, net: "torch.nn.Module") -> None:
        """``net`` (built on the meta device) against the tensors stored under ``name``."""
        prefix = name + "."
        stored = {k[len(prefix):]: shape for k, (shape, _dtype) in self.tensor_shapes.items() if k.startswith(prefix)}
        if not stored:
            raise CheckpointError(f"{self.path} has no weights for module {name!r}")
        state = net.state_dict()
        problem = _fit_problem({k: tuple(v.shape) for k, v in state.items()}, stored)
        if problem:
            raise CheckpointError(f"{self.path} does not fit this model's {name!r} network "
                                  f"(as its metadata describes it): {problem}")
        # memory the network would allocate that the file does not hold (non-persistent buffers)
        extra = sum(t.numel() for k, t in [*net.named_parameters(), *net.named_buffers()] if k not in state)
        held = sum(t.numel() for t in state.values())
        if extra > max(held, 1 << 26):
            raise CheckpointError(
                f"{self.path}: its metadata describes a {name!r} network that would allocate "
                f"{extra * 4 / 1e9:.1f} GB beyond the weights it stores; refusing to build it"
            )


@dataclass
class _MemoryCheckpoint(Checkpoint):
    """:meth:`Checkpoint.in_memory`: the tensors come from a dict."""

    held: dict[str, Any] = field(default_factory=dict)

    def tensors(self, prefix: str = "", *, device: str = "cpu") -> dict[str, "torch.Tensor"]:
        return {k: v.to(device) for k, v in self.held.items() if k.startswith(prefix)}


def load_checkpoint(path: str | os.PathLike, *, model: str | None = None) -> Checkpoint:
    """Open a gentool checkpoint, refusing anything else.

    The header and the gentool metadata are validated here, once: wrong types, missing fields and
    absurd nesting are a :class:`CheckpointError` with a one-line reason. ``model`` (if given) must
    match the model the checkpoint was trained as.
    """
    path = Path(path)
    header = read_header(path)
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT or "gentool" not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a gentool checkpoint (no gentool metadata)")
    meta = _check_meta(path, _parse_json(metadata["gentool"], path, "gentool metadata"))
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

    from gentool.version import __version__

    tensors: dict[str, torch.Tensor] = {}
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in modules.items()}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().to("cpu").contiguous()
    doc = {"gentool_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
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
    """Inverse of :func:`pack_state`; a document that is not what :func:`pack_state` writes (a
    reference to a tensor the file lacks, a ``__dict__`` that is no table) is a ``ValueError``."""

    def walk(x: Any, where: str) -> Any:
        if isinstance(x, dict):
            if "__tensor__" in x:
                ref = x["__tensor__"]
                if not isinstance(ref, str) or ref not in tensors:
                    raise ValueError(f"{where or '/'} names a tensor the file does not hold ({str(ref)[:60]!r})")
                return tensors[ref]
            if "__dict__" in x:
                inner = x["__dict__"]
                if not isinstance(inner, dict):
                    raise ValueError(f"{where or '/'}: a table was expected, found {type(inner).__name__}")
                return {k: walk(v, f"{where}/{k}") for k, v in inner.items()}
            if "__items__" in x:
                items = x["__items__"]
                if not isinstance(items, list) or not all(isinstance(p, list) and len(p) == 2 for p in items):
                    raise ValueError(f"{where or '/'}: a list of key-value pairs was expected")
                out = {}
                for i, (k, v) in enumerate(items):
                    key = walk(k, f"{where}/k{i}")
                    if isinstance(key, (dict, list)) or hasattr(key, "dtype"):
                        raise ValueError(f"{where or '/'}: key {i} is not a plain value")
                    out[key] = walk(v, f"{where}/{i}")
                return out
            if "__tuple__" in x:
                items = x["__tuple__"]
                if not isinstance(items, list):
                    raise ValueError(f"{where or '/'}: a list was expected, found {type(items).__name__}")
                return tuple(walk(v, f"{where}/{i}") for i, v in enumerate(items))
            raise ValueError(f"{where or '/'}: an entry of unknown form (keys {sorted(x)[:4]})")
        if isinstance(x, list):
            return [walk(v, f"{where}/{i}") for i, v in enumerate(x)]
        return x

    return walk(doc, "")
