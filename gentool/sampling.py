"""Writing samples to disk in bounded memory: any ``-n`` works, or is refused before it fills the disk.

``gentool sample MODEL -n 10000000`` must neither hold ten million images in memory nor run for an
hour and then die on a full disk. :func:`write_samples` asks the model's plugin for the samples in
chunks (the same ``gentool_sample`` hook, called once per chunk with ``job.first`` and
``job.total`` telling it where the chunk lies; the seeded generator runs on from chunk to chunk),
writes each chunk's files as it comes, shows progress, and checks the disk:

- before anything is drawn: the file system must have an inode per file;
- after a small first chunk: the bytes its files took on disk, projected to all of ``n``, must fit
  in the free space (else the first chunk's files are removed and the request refused);
- a disk that fills anyway (another process) stops with the count written; what was written stays.

The chunks depend only on ``n`` and the image size, so the same seed and ``n`` give the same
files; a request that fits one chunk (any of up to 1,024 samples) is one hook call, exactly what
``Model.sample(n)`` draws.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from gentool.errors import ConfigError, GentoolError

if TYPE_CHECKING:
    import torch

#: Memory one chunk of float images may take (the plugin's output plus the uint8 copy written).
CHUNK_BYTES = 16 * 2**20
#: Samples a request may have and still be one hook call, whatever the image size: a plugin's
#: whole-request pictures (an interpolation walk, a style-mixing table) stay whole up to here.
MIN_CHUNK = 1024
#: Samples per chunk for text models (their length is not known in advance).
TEXT_CHUNK = 1024
#: Samples in the first chunk of a chunked request: the probe whose size on disk is projected.
PROBE = 256
#: Images in the grid of a chunked request (the grid of the first chunk, cut to this many).
GRID_MAX = 1024
#: Environment variable overriding the samples per chunk (tuning, and tests of the chunked path).
CHUNK_ENV = "GENTOOL_SAMPLE_CHUNK"


def chunk_size(shape: list[int] | tuple[int, ...] | None, modality: str) -> int:
    """Samples per hook call: as many float images as fit in :data:`CHUNK_BYTES`, at least
    :data:`MIN_CHUNK` (:data:`CHUNK_ENV` overrides it)."""
    env = os.environ.get(CHUNK_ENV)
    if env:
        if not env.strip().isdigit() or int(env) < 1:
            raise ConfigError(f"{CHUNK_ENV}={env!r}: expected a positive whole number of samples")
        return int(env)
    if modality != "image" or not shape:
        return TEXT_CHUNK
    per = max(4, float_image_bytes(shape))
    return max(MIN_CHUNK, min(65536, CHUNK_BYTES // per))


def float_image_bytes(shape: Any) -> int:
    """Bytes of one float32 image of ``shape`` (C, H, W)."""
    return 4 * math.prod(int(d) for d in shape)


def label_name(y: int, names: list[str] | None) -> str:
    """The file-name form of class ``y``: its name where the model has names, else its number."""
    return safe_name(names[y] if names and 0 <= y < len(names) else str(y))


def safe_name(text: str) -> str:
    """``text`` reduced to characters safe in a file name on every system (at most 40)."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:40] or "x"


class SampleWriter:
    """Writes samples into ``out`` chunk after chunk, numbering files across chunks.

    Images: ``NNNNNN.png`` (``NNNNNN_<label>.png`` with labels) and, from the first chunk,
    ``grid.png``; with ``as_dataset``, ``<label>/NNNNNN.png`` (or ``images/NNNNNN.png``). Texts:
    ``NNNNNN.txt`` and all of them in ``samples.txt`` (appended to a temporary file, renamed at
    the end, so a crash never leaves a half file under the final name).
    """

    def __init__(self, out: Path, *, as_dataset: bool = False, class_names: list[str] | None = None,
                 grid_max: int | None = None):
        self.out, self.as_dataset, self.names, self.grid_max = Path(out), as_dataset, class_names, grid_max
        self.count = 0
        self.classes: set[int] = set()
        self.written: list[Path] = []  # every file this writer made (for a refusal's clean-up)
        self._texts_tmp: Path | None = None

    def add(self, images: "torch.Tensor | None", labels: "torch.Tensor | None", texts: list[str] | None,
            nrow: int | None) -> int:
        """Write one chunk; returns the number of samples in it."""
        self.out.mkdir(parents=True, exist_ok=True)
        if images is not None:
            return self._add_images(images, labels, nrow)
        return self._add_texts(texts or [])

    def _add_images(self, images: "torch.Tensor", labels: "torch.Tensor | None", nrow: int | None) -> int:
        from gentool.images import save_grid, save_images

        imgs = images.float().cpu()
        k = int(imgs.shape[0])
        ys = [int(x) for x in labels.tolist()] if labels is not None else None
        idx = range(self.count, self.count + k)
        if self.as_dataset:
            if ys is None:
                self.written += save_images(imgs, self.out / "images", [f"{i:06d}.png" for i in idx])
            else:
                for y in sorted(set(ys)):
                    sel = [j for j, lab in enumerate(ys) if lab == y]
                    self.written += save_images(imgs[sel], self.out / label_name(y, self.names),
                                                [f"{idx[j]:06d}.png" for j in sel])
                    self.classes.add(y)
        else:
            files = [f"{i:06d}_{label_name(y, self.names)}.png" for i, y in zip(idx, ys)] if ys is not None else \
                [f"{i:06d}.png" for i in idx]
            self.written += save_images(imgs, self.out, files)
            if self.count == 0:
                shown = imgs if self.grid_max is None else imgs[: self.grid_max]
                self.written.append(save_grid(shown, self.out / "grid.png", nrow))
        self.count += k
        return k

    def _add_texts(self, texts: list[str]) -> int:
        from gentool.io import write_atomic

        if self._texts_tmp is None:
            self._texts_tmp = self.out / ".samples.txt.tmp"
            self._texts_tmp.write_bytes(b"")
            self.written.append(self._texts_tmp)
        with open(self._texts_tmp, "ab") as joined:
            for t in texts:
                path = self.out / f"{self.count:06d}.txt"
                write_atomic(path, t.encode("utf-8"))
                self.written.append(path)
                joined.write((("\n\n----\n\n" if self.count else "") + t).encode("utf-8"))
                self.count += 1
        return len(texts)

    def finish(self) -> str:
        """Close the request; what was written, in a phrase (``16 images and grid.png to out``)."""
        if self._texts_tmp is not None:
            final = self.out / "samples.txt"
            os.replace(self._texts_tmp, final)
            self.written[self.written.index(self._texts_tmp)] = final
            self._texts_tmp = None
            return f"{self.count} texts and samples.txt to {self.out}"
        if self.as_dataset:
            if not self.classes:
                return f"{self.count} unlabelled images to {self.out / 'images'}"
            return f"{self.count} images in {len(self.classes)} class folders under {self.out}"
        return f"{self.count} images and grid.png to {self.out}"

    def bytes_on_disk(self) -> int:
        """Bytes the files written so far take on disk (allocated blocks, not just their lengths)."""
        total = 0
        for p in self.written:
            try:
                st = p.stat()
            except OSError:
                continue
            blocks = getattr(st, "st_blocks", None)
            total += blocks * 512 if blocks else st.st_size
        return total

    def remove(self) -> None:
        """Delete every file this writer made (a request refused after its probe chunk)."""
        for p in self.written:
            try:
                p.unlink()
            except OSError:
                pass
        for folder in sorted({p.parent for p in self.written}, key=lambda d: len(d.parts), reverse=True):
            try:
                folder.rmdir()  # only if empty: never a folder that held the user's files
            except OSError:
                pass


@dataclass
class SavedSamples:
    """What :func:`write_samples` (``Model.save_samples``) did: where, how many, and what it said."""

    out: Path
    count: int
    summary: str
    chunks: int = 1
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_room(out: Path, n_files: int) -> None:
    """Refuse before drawing anything when the file system under ``out`` has fewer free inodes than
    the files the request will make (``statvfs``; skipped where it is not available)."""
    probe = _existing_parent(out)
    try:
        st = os.statvfs(probe)
    except (AttributeError, OSError):
        return
    if st.f_files and st.f_favail < n_files:
        raise GentoolError(f"cannot write {n_files:,} files under {out}: its file system has room for "
                           f"{st.f_favail:,} more files (inodes); ask for fewer samples or write elsewhere")


def check_projection(out: Path, writer: SampleWriter, done: int, total: int) -> None:
    """After the probe chunk: refuse when the rest, at the probe's bytes per sample, will not fit."""
    from gentool.data.checks import format_bytes

    used = writer.bytes_on_disk()
    if done <= 0 or used <= 0:
        return
    need = int(used / done * (total - done) * 1.05)
    free = shutil.disk_usage(_existing_parent(out)).free
    if need > free:
        writer.remove()
        raise GentoolError(f"{total:,} samples would need about {format_bytes(used / done * total)} under {out} "
                           f"(measured on the first {done}); {format_bytes(free)} is free: ask for fewer "
                           f"samples or write elsewhere (nothing was kept)")


def _existing_parent(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(first, count)`` of each hook call for ``n`` samples: one call when ``n <= size``; else a
    :data:`PROBE`-sized first call (measured for the disk check), then calls of ``size``."""
    if n <= size:
        yield 0, n
        return
    first = min(PROBE, size)
    yield 0, first
    done = first
    while done < n:
        k = min(size, n - done)
        yield done, k
        done += k


def write_samples(draw: Callable[[int, int], Any], n: int, out: Path, *, size: int, as_dataset: bool,
                  class_names: list[str] | None, label: str) -> SavedSamples:
    """Draw ``n`` samples through ``draw(first, count)`` (a plugin's result per chunk) and write
    them to ``out`` in chunks of ``size``, with progress; see the module's docstring."""
    from gentool.report import say

    plan = list(chunks(n, size))
    chunked = len(plan) > 1
    writer = SampleWriter(out, as_dataset=as_dataset, class_names=class_names,
                          grid_max=GRID_MAX if chunked else None)
    if chunked:
        check_room(out, n + 1)
    progress = _Progress(label, n) if chunked else None
    files: list[Path] = []
    try:
        for i, (first, count) in enumerate(plan):
            result = draw(first, count)
            try:
                writer.add(result.images, result.labels, result.texts, result.nrow)
            except OSError as exc:
                raise write_error(exc, out, writer, n) from None
            files += [f for f in result.files if f not in files]
            if i == 0 and chunked:
                check_projection(out, writer, count, n)
            if progress is not None:
                progress.update(first + count)
        summary = writer.finish()
    finally:
        if progress is not None:
            progress.close()
    if chunked:
        say(f"drew {n:,} samples in {len(plan)} chunks")
    return SavedSamples(out=Path(out), count=writer.count, summary=summary, chunks=len(plan), files=files)


def write_error(exc: OSError, out: Path, writer: SampleWriter, n: int) -> GentoolError:
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and writer.count:
        return GentoolError(f"the disk under {out} filled up after {writer.count:,} of {n:,} samples{where}: "
                            f"those are kept; free some space and run it again")
    return GentoolError(f"cannot write samples to {out}: {exc.strerror or exc}{where}")


class _Progress:
    """A rich bar on a terminal, a line per tenth otherwise; silent under ``--quiet``."""

    def __init__(self, label: str, total: int):
        from gentool import report

        current = report.current()
        self.quiet = bool(current and (current.quiet or not current.main))
        self.total, self.label, self.next_line = total, label, total / 10
        self.bar = None
        if not self.quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=False)
            self.bar.start()
            self.task = self.bar.add_task(label, total=total)

    def update(self, done: int) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=done)
        elif done >= self.next_line or done == self.total:
            print(f"{self.label}: {done:,}/{self.total:,} samples", file=sys.stderr, flush=True)
            while self.next_line <= done:
                self.next_line += self.total / 10

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
