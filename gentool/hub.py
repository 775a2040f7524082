"""Share trained models through the Hugging Face Hub: ``gentool push`` and ``gentool pull``.

A pushed repository holds what a user needs to sample with nothing else (the layout diffusers
uses: weights, a JSON config, a model card)::

    model.safetensors   the run's best checkpoint (else last), weights only: the ``__train__/``
                        tensors and the training state are left out, every other bit of gentool
                        metadata is kept, so ``gentool sample MODEL --checkpoint hf://owner/name``
                        works from this file alone
    config.json         model, family, plugin and versions, config, data, training options,
                        step, epoch, metrics (and the ``eval.json`` results, if the run has them)
    README.md           a model card: YAML front matter, metrics, sample grid, settings, usage
    samples.png         the run's newest sample grid, if any
    loss.png            the run's loss curves, if any

``huggingface_hub`` is an optional dependency (``gentool[hub]``) and, like torch, is imported
only inside the functions that need it. Pulls go through its cache, so a model pulled once
samples offline too (``HF_HUB_OFFLINE=1``).

Offline stand-in: when ``$GENTOOL_HUB_DIR`` is set, that folder plays the hub. A push writes
``$GENTOOL_HUB_DIR/<owner>/<name>/`` and a pull copies from it into gentool's cache: the whole
path, without a network, for tests and air-gapped machines.

A pull never follows a symbolic link out of the repository (or, through huggingface_hub, out of
the snapshot and its blob cache), nor copies a hard link whose file has a name outside the
repository: such a link is refused with one line naming it, and nothing of that pull stays in the
cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterable

from gentool.errors import CheckpointError, GentoolError

HUB_DIR_ENV = "GENTOOL_HUB_DIR"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
SAMPLES = "samples.png"
LOSS = "loss.png"
#: Files a pull fetches (weights, JSON, card, images): never pickles or anything executable.
ALLOW_PATTERNS = ["*.safetensors", "*.json", "*.md", "*.png"]

_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_EPOCH_PNG = re.compile(r"^epoch_(\d+)\.png$")


class UnsafeLinkError(CheckpointError):
    """A pulled repository holds a symbolic link that points out of it: refused, never followed."""


_INSTALL_HINT = "huggingface_hub is not installed: pip install huggingface_hub (the hub extra of gentool)"


# -- repository names ---------------------------------------------------------------------------
def parse_repo_id(repo_id: str) -> tuple[str, str]:
    """Split ``owner/name`` (an ``hf://`` prefix is allowed) into its parts, or say what is wrong."""
    ref = (repo_id or "").strip()
    if ref.startswith("hf://"):
        ref = ref[len("hf://"):]
    ref = ref.strip("/")
    parts = ref.split("/")
    if len(parts) != 2 or not all(parts):
        raise GentoolError(f"bad hub repository {repo_id!r}: expected owner/name, e.g. alice/vae-digits")
    for part in parts:
        if len(part) > 96 or not _PART.match(part) or "--" in part or ".." in part:
            raise GentoolError(
                f"bad hub repository {repo_id!r}: owner and name use letters, digits, '-', '_' and '.', "
                "start and end with a letter or digit, have no '--' or '..' and at most 96 characters"
            )
    return parts[0], parts[1]


def _repo(repo_id: str) -> str:
    owner, name = parse_repo_id(repo_id)
    return f"{owner}/{name}"


def hub_dir() -> Path | None:
    """The offline stand-in for the hub (``$GENTOOL_HUB_DIR``), or None to use the real hub."""
    value = os.environ.get(HUB_DIR_ENV)
    return Path(value).expanduser() if value else None


# -- what to push -------------------------------------------------------------------------------
def find_source(run: str) -> tuple[Path, Path | None]:
    """The checkpoint to push and the run folder it belongs to (None for a loose file).

    ``run`` is a run folder, ``MODEL/RUN`` under the runs folder, or a checkpoint file.
    """
    from gentool.paths import runs_dir
    from gentool.runs import Run

    path = Path(run).expanduser()
    if not path.exists() and not path.is_absolute():
        candidate = runs_dir() / run
        if candidate.exists():
            path = candidate
    if path.is_file():
        folder = path.parent
        is_run = any((folder / f).exists() for f in ("config.toml", "metrics.jsonl", "samples"))
        return path, folder if is_run else None
    if path.is_dir():
        ckpt = Run("", path.name, path).checkpoint()
        if ckpt is None and (path / WEIGHTS).is_file():
            ckpt = path / WEIGHTS
        if ckpt is None:
            raise CheckpointError(f"{path} holds no best.safetensors or last.safetensors to push (train it first)")
        return ckpt, path
    raise CheckpointError(
        f"nothing to push at {run!r}: give a run folder, MODEL/RUN under {runs_dir()}, or a checkpoint file"
    )


def newest_samples(run_dir: Path | None) -> Path | None:
    """The run's latest ``samples/epoch_NNN.png`` (by epoch number), or None."""
    if run_dir is None or not (run_dir / "samples").is_dir():
        return None
    found = []
    for p in (run_dir / "samples").iterdir():
        m = _EPOCH_PNG.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def read_eval(run_dir: Path | None) -> dict[str, Any] | None:
    """``eval.json`` of the run (the document of ``gentool evaluate --json``, or flat metrics)."""
    if run_dir is None or not (run_dir / "eval.json").is_file():
        return None
    try:
        doc = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise GentoolError(f"{run_dir / 'eval.json'} is not readable JSON: fix or delete it, then push again") from None
    if not isinstance(doc, dict):
        return None
    if not isinstance(doc.get("metrics"), dict):
        doc = {"metrics": {k: v for k, v in doc.items() if isinstance(v, (int, float, str, bool))}}
    return doc


def write_weights(src: Path, dest: Path) -> dict[str, Any]:
    """Re-save checkpoint ``src`` as ``dest`` with its weights and metadata only; return the metadata.

    The ``__train__/`` tensors and ``train_state`` (optimizers, RNG, ...) are dropped: they matter
    for ``--resume`` only, and a shared model should not carry them.
    """
    from safetensors.torch import save

    from gentool.checkpoint import FORMAT, TRAIN_PREFIX, load_checkpoint
    from gentool.io import write_atomic

    ckpt = load_checkpoint(src)
    tensors = {k: v for k, v in ckpt.tensors().items() if not k.startswith(TRAIN_PREFIX)}
    if not tensors:
        raise CheckpointError(f"{src} holds no weights to push")
    meta = {k: v for k, v in ckpt.meta.items() if k != "train_state"}
    write_atomic(dest, save(tensors, metadata={"format": FORMAT, "gentool": json.dumps(meta)}))
    return meta


def config_doc(meta: dict[str, Any], evaluation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of a pushed model, from the checkpoint's metadata."""
    keys = ("model", "family", "modality", "plugin", "plugin_version", "gentool_version", "created", "run",
            "config", "parameters", "data", "train", "step", "epoch", "metrics", "monitor")
    doc = {"library_name": "gentool", **{k: meta[k] for k in keys if k in meta}}
    if evaluation:
        doc["evaluation"] = evaluation
    return doc


def stage(run: str, repo_id: str, folder: str | os.PathLike) -> Path:
    """Write the repository files for ``run`` into ``folder`` (created if needed); return it."""
    repo = _repo(repo_id)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt_path, run_dir = find_source(run)
    meta = write_weights(ckpt_path, folder / WEIGHTS)
    evaluation = read_eval(run_dir)
    (folder / CONFIG).write_text(json.dumps(config_doc(meta, evaluation), indent=2) + "\n", encoding="utf-8")
    samples = newest_samples(run_dir)
    if samples is not None:
        shutil.copyfile(samples, folder / SAMPLES)
    if run_dir is not None and (run_dir / "loss.png").is_file():
        shutil.copyfile(run_dir / "loss.png", folder / LOSS)
    card = model_card(repo, meta, evaluation=evaluation, samples=samples is not None,
                      loss=(folder / LOSS).exists())
    (folder / CARD).write_text(card, encoding="utf-8")
    return folder


# -- the model card -----------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def _cell(value: Any) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _param_note(meta: dict[str, Any]) -> str:
    counts = meta.get("parameters")
    if not isinstance(counts, dict) or not counts:
        return ""
    try:
        return f", {sum(int(v) for v in counts.values()):,} parameters"
    except (TypeError, ValueError):
        return ""


def model_card(repo_id: str, meta: dict[str, Any], *, evaluation: dict[str, Any] | None = None,
               samples: bool = False, loss: bool = False) -> str:
    """The ``README.md`` of a pushed model: YAML front matter, then Markdown."""
    model = str(meta.get("model", "model"))
    family = str(meta.get("family", "") or "")
    plugin = str(meta.get("plugin", "") or "")
    tags = list(dict.fromkeys(t for t in ("gentool", model, family) if t))
    # JSON strings are valid YAML scalars: quoting this way needs no YAML library.
    front = ["---", "library_name: gentool", "tags:"] + [f"- {json.dumps(t)}" for t in tags] + ["---", ""]

    data = meta.get("data") or {}
    what = f"**{model}**" + (f" ({family})" if family else "")
    made = f"plugin `{plugin}` {meta.get('plugin_version', '')}".strip() if plugin else "gentool"
    lines = [f"# {repo_id}", "",
             f"A {what} model trained with gentool {meta.get('gentool_version', '')} ({made})".rstrip()
             + (f" on `{data['name']}`" if data.get("name") else "")
             + f": step {meta.get('step', 0)}, epoch {meta.get('epoch', 0)}" + _param_note(meta) + ".", ""]

    rows = [(k, v, f"training, epoch {meta.get('epoch', 0)}") for k, v in (meta.get("metrics") or {}).items()]
    if evaluation:
        where = " ".join(str(evaluation[k]) for k in ("data", "split") if evaluation.get(k))
        source = "evaluate" + (f" on {where}" if where else "")
        rows += [(k, v, source) for k, v in (evaluation.get("metrics") or {}).items()]
        rows += [(k, v, f"{source} (setting)") for k, v in (evaluation.get("settings") or {}).items()]
    lines += ["## Metrics", ""]
    lines += _table(("metric", "value", "source"), rows) if rows else ["No metrics were recorded."]
    lines.append("")
    for warning in (evaluation or {}).get("warnings") or []:
        lines += [f"> Warning from `gentool evaluate`: {warning}", ""]

    if samples or loss:
        lines += ["## Samples", ""]
        if samples:
            lines += [f"![samples of {model}]({SAMPLES})", ""]
        if loss:
            lines += [f"![training loss]({LOSS})", ""]

    lines += ["## Training", ""]
    train = {k: v for k, v in (meta.get("train") or {}).items() if v is not None}
    if train:
        lines += _table(("option", "value"), train.items()) + [""]
    config = meta.get("config") or {}
    if config:
        lines += ["Model config:", ""] + _table(("key", "value"), config.items()) + [""]
    if data:
        desc = [f"`{data.get('name', '?')}`"]
        if data.get("kind"):
            desc.append(str(data["kind"]) + " data")
        if data.get("shape"):
            desc.append("shape " + "x".join(map(str, data["shape"])))
        if data.get("count"):
            desc.append(f"{data['count']} examples")
        lines.append("Data: " + ", ".join(desc) + ".")
        if data.get("class_names"):
            lines.append("Classes: " + ", ".join(map(str, data["class_names"])) + ".")
        lines.append("")

    lines += ["## Use", "",
              "Install gentool with its hub extra (`gentool[hub]`)" + (f" and the gentool plugin `{plugin}`" if plugin else "")
              + ", then:", "",
              "```bash",
              f"gentool pull {repo_id}",
              f"gentool sample {model} --checkpoint hf://{repo_id} -n 16",
              f"gentool evaluate {model} --checkpoint hf://{repo_id}",
              "```", "",
              f"`{WEIGHTS}` is a self-describing safetensors checkpoint (no pickle): `gentool info {WEIGHTS}` "
              "shows its model, config, data and layers.", ""]
    return "\n".join(front + lines)


# -- push ---------------------------------------------------------------------------------------
def push(run: str, repo_id: str, *, private: bool = False) -> str:
    """Push a run (folder, ``MODEL/RUN`` or checkpoint file) to hub repository ``owner/name``.

    Returns the repository's URL, or its folder under ``$GENTOOL_HUB_DIR`` when that is set.
    """
    owner, name = parse_repo_id(repo_id)
    repo = f"{owner}/{name}"
    local = hub_dir()
    api = _hf_api() if local is None else None  # before staging: a missing library should not cost a torch import first
    with tempfile.TemporaryDirectory(prefix="gentool-push-") as tmp:
        folder = stage(run, repo, Path(tmp) / "repo")
        if local is not None:
            return str(_install_folder(folder, local / owner / name))
        return _upload(api, folder, repo, private=private)


def _hf_api():
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise GentoolError(_INSTALL_HINT) from None
    return HfApi()


def _upload(api: Any, folder: Path, repo: str, *, private: bool) -> str:
    import gentool

    try:
        url = api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder),
                          commit_message=f"gentool {gentool.__version__} push",
                          delete_patterns=[SAMPLES, LOSS])  # stale images of an earlier push go
    except Exception as exc:
        raise _hub_error(exc, repo, pushing=True) from None
    return str(url)


# -- pull ---------------------------------------------------------------------------------------
def pull(repo_id: str) -> Path:
    """Fetch hub repository ``owner/name`` (``hf://`` prefix allowed) into the cache.

    Returns the path of its validated ``model.safetensors``. Uses ``$GENTOOL_HUB_DIR`` when set,
    else the Hugging Face Hub through its cache (so ``HF_HUB_OFFLINE=1`` works once pulled).
    """
    owner, name = parse_repo_id(repo_id)
    repo = f"{owner}/{name}"
    local = hub_dir()
    if local is not None:
        src = local / owner / name
        if not src.is_dir():
            raise GentoolError(f"no repository {repo} in the local hub {local} (${HUB_DIR_ENV} is set)")
        from gentool.paths import cache_dir

        cached = cache_dir() / "hub" / owner / name
        try:
            folder = _install_folder(src, cached, patterns=ALLOW_PATTERNS)
        except UnsafeLinkError:
            # an earlier pull (by a gentool that followed links) may hold the link target's bytes
            shutil.rmtree(cached, ignore_errors=True)
            raise
    else:
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise GentoolError(_INSTALL_HINT) from None
        import gentool

        try:
            folder = Path(snapshot_download(repo, allow_patterns=ALLOW_PATTERNS, library_name="gentool",
                                            library_version=gentool.__version__))
        except Exception as exc:
            raise _hub_error(exc, repo, pushing=False) from None
        _check_snapshot(folder, repo)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"hub repository {repo} holds no {WEIGHTS}: it is not a gentool model")
    from gentool.checkpoint import load_checkpoint

    load_checkpoint(weights)  # refuses pickles and non-gentool files with a clear reason
    return weights


# -- helpers ------------------------------------------------------------------------------------
def _dir_mode() -> int:
    """What ``mkdir`` gives a folder under the current umask (``mkdtemp``'s 0700 would hide it)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _link_target(link: Path) -> Path | None:
    """Where symbolic link ``link`` finally leads (resolved), or None for a dangling or looping link."""
    try:
        return link.resolve(strict=True)
    except (OSError, RuntimeError):  # missing target, or a loop (RuntimeError before Python 3.13)
        return None


def _names_inside(root: Path) -> dict[tuple[int, int], int]:
    """How many names each file (device, inode) has inside folder ``root`` (links not followed)."""
    counts: dict[tuple[int, int], int] = {}
    for base, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(base, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                counts[key] = counts.get(key, 0) + 1
    return counts


def _copy_regular(src: Path, dest: Path, names_inside: dict[tuple[int, int], int]) -> None:
    """Copy regular file ``src`` to new file ``dest`` without following a link put in its place.

    A file with more names (hard links) than ``names_inside`` finds for it in the repository has a
    name outside it: a hard link can make any file the linker could reach look like the
    repository's own, so it is refused like a symbolic link out of the repository.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(src, flags)
    except OSError as exc:
        raise UnsafeLinkError(f"cannot read {src} from the repository: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fin:
        st = os.fstat(fin.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeLinkError(f"{src} in the repository is not a regular file: refused")
        if st.st_nlink > names_inside.get((st.st_dev, st.st_ino), 0):
            raise UnsafeLinkError(f"refusing {src}: a hard link to a file with {st.st_nlink} names, some outside "
                                  "the repository (replace it with a copy; nothing was pulled)")
        with open(dest, "xb") as fout:  # open() honours the umask, like gentool.io.write_atomic
            shutil.copyfileobj(fin, fout)


def _install_folder(src: Path, dest: Path, patterns: list[str] | None = None) -> Path:
    """Copy folder ``src`` to ``dest``, replacing it: copy beside it, then rename into place.

    Files only (no subfolders). A symbolic link is copied as the file it points to only when that
    file lies inside ``src``; a link out of it (``config.json -> /etc/shadow``), a dangling or a
    looping link is refused with an :class:`UnsafeLinkError` naming it, and nothing is installed;
    so is a hard link whose file has a name outside ``src``. The new folder gets the umask's permissions, as files do.
    """
    import fnmatch

    root = src.resolve()
    inside = _names_inside(root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    old = None
    try:
        os.chmod(tmp, _dir_mode())
        for p in sorted(src.iterdir()):
            if patterns is not None and not any(fnmatch.fnmatch(p.name, pat) for pat in patterns):
                continue
            origin = p
            if p.is_symlink():
                target = _link_target(p)
                if target is None or not _inside(target, root):
                    where = "a dangling or looping link" if target is None else f"a link to {target}"
                    raise UnsafeLinkError(f"refusing {p}: {where}, outside the repository (links are not "
                                          "followed out of a repository; nothing was pulled)")
                origin = target
            if origin.is_file():
                _copy_regular(origin, tmp / p.name, inside)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.{os.getpid()}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not dest.exists():
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def _check_snapshot(folder: Path, repo: str) -> None:
    """Refuse a huggingface_hub snapshot holding a link out of its own cache entry.

    huggingface_hub lays a snapshot out as links ``snapshots/<commit>/<file> -> ../../blobs/<hash>``:
    those (and links inside the snapshot) are fine. A link anywhere else (the cache was tampered
    with) is removed from the cache and the pull refused, naming the file.
    """
    snapshot = folder.resolve()
    allowed = (snapshot, (folder.parent.parent / "blobs").resolve())
    for base, dirs, files in os.walk(folder):  # followlinks=False: a linked folder is checked as a link
        for name in dirs + files:
            p = Path(base) / name
            if not p.is_symlink():
                continue
            target = _link_target(p)
            if target is not None and any(_inside(target, a) for a in allowed):
                continue
            try:
                p.unlink()
            except OSError:
                pass
            where = "a dangling or looping link" if target is None else f"a link to {target}"
            raise UnsafeLinkError(f"refusing {p} in the cached copy of {repo}: {where}, outside the hub cache "
                                  "(removed from the cache; nothing was pulled)")


def _is_network_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        names = {c.__name__ for c in type(exc).__mro__}
        if names & {"ConnectionError", "ConnectError", "TimeoutException", "Timeout", "TimeoutError",
                    "NetworkError", "ProxyError", "OfflineModeIsEnabled", "ReadTimeout", "ConnectTimeout"}:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _hub_error(exc: Exception, repo: str, *, pushing: bool) -> GentoolError:
    """One clear line for what went wrong talking to the hub."""
    names = {c.__name__ for c in type(exc).__mro__}
    status = getattr(getattr(exc, "response", None), "status_code", None)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    if pushing:
        if "OfflineModeIsEnabled" in names or offline:
            return GentoolError(f"cannot push {repo}: HF_HUB_OFFLINE is set (unset it, or set {HUB_DIR_ENV} "
                                "to push into a local folder)")
        if status in (401, 403) or "LocalTokenNotFoundError" in names:
            return GentoolError(f"not allowed to push to {repo}: log in with `hf auth login` or set HF_TOKEN "
                                "to a token with write access")
        if _is_network_error(exc):
            return GentoolError(f"could not reach the hub to push {repo}: check the network, or set "
                                f"{HUB_DIR_ENV} to push into a local folder")
        return GentoolError(f"push to {repo} failed: {first}")
    if "RevisionNotFoundError" in names:
        return GentoolError(f"hub repository {repo} has no main branch to pull")
    if "GatedRepoError" in names:
        return GentoolError(f"hub repository {repo} is gated: accept its terms on the hub, then log in with "
                            "`hf auth login`")
    if "RepositoryNotFoundError" in names or status == 404:
        return GentoolError(f"no hub repository {repo} (or it is private: log in with `hf auth login`)")
    if status == 401:
        return GentoolError(f"not allowed to read {repo}: log in with `hf auth login` or set HF_TOKEN")
    if "IncompleteSnapshotError" in names:
        return GentoolError(f"the cached copy of {repo} is incomplete and the hub could not be reached: "
                            "pull it again with a network")
    if "LocalEntryNotFoundError" in names or _is_network_error(exc):
        why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        return GentoolError(f"cannot pull {repo}: {why} and it is not in the cache (a model pulled once "
                            "works offline; pull it with a network first)")
    return GentoolError(f"pull of {repo} failed: {first}")
