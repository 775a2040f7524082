"""The GAN plugin's tools for ``gentool serve`` (``POST /v1/tools/upscale``, ``/v1/tools/translate``
and their page panels): what ``gentool upscale`` and ``gentool translate`` do per file, for uploaded
bytes, through the same :class:`~gentool_gan.upscale.Upscaler` and
:class:`~gentool_gan.cyclegan_sample.Translator`. Torch-free at import."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import gentool

@dataclass
class UpscaleToolOptions:
    """Options of the ``upscale`` tool (those of ``gentool upscale`` that make sense for uploads)."""

    checkpoint: str | None = field(default=None, metadata={
        "help": "srgan checkpoint or run (default: the newest srgan run)."})
    stage: str = field(default="gan", metadata={"help": "gan (sharper) or pixel (higher PSNR)."})
    tile: int = field(default=128, metadata={"help": "Tile side in input pixels (memory stays bounded)."})


@dataclass
class TranslateToolOptions:
    """Options of the ``translate`` tool (those of ``gentool translate`` that make sense for uploads)."""

    checkpoint: str | None = field(default=None, metadata={
        "help": "cyclegan checkpoint or run (default: the newest cyclegan run)."})
    direction: str = field(default="a2b", metadata={"help": "a2b (domain A to B) or b2a."})
    native: bool = field(default=False, metadata={"help": "At the image's own size (default: the training scale)."})


def _worker(kind: str, model: str, checkpoint: str | None, make: Callable[[str], Any], *options: Any) -> Any:
    """The worker for ``checkpoint`` (resolved as the verb would) and ``options``, loaded once per file version."""
    return gentool.keep_loaded(gentool.resolve_checkpoint(model, checkpoint), make, kind, *options)


def _answer(files: list[tuple[str, bytes]], work: Callable[[bytes], tuple[dict[str, Any], bytes]]) -> list[gentool.ToolAnswer]:
    """``work(data)`` -> (fields, png) for each file; a file that cannot be read gets its one line."""
    from gentool_gan.upscale import BadImage

    answers = []
    for name, data in files:
        try:
            fields, png = work(data)
        except BadImage as exc:
            answers.append(gentool.ToolAnswer(file=name, error=str(exc)))
        else:
            answers.append(gentool.ToolAnswer(file=name, fields=fields, png=png))
    return answers


def run_upscale(files: list[tuple[str, bytes]], options: UpscaleToolOptions) -> list[gentool.ToolAnswer]:
    """Each image up-scaled by srgan (tiled, any size and mode, alpha kept), as a PNG."""
    from gentool_gan.upscale import Upscaler, png_bytes

    o = options or UpscaleToolOptions()
    up = _worker("upscale", "srgan", o.checkpoint,
                 lambda path: Upscaler(path, stage=o.stage, tile=o.tile, device="auto"), o.stage, o.tile)

    def work(data: bytes) -> tuple[dict[str, Any], bytes]:
        sr, alpha, info = up(data)
        return info, png_bytes(sr, alpha)

    return _answer(files, work)


def run_translate(files: list[tuple[str, bytes]], options: TranslateToolOptions) -> list[gentool.ToolAnswer]:
    """Each image translated to the other domain by cyclegan (alpha kept), as a PNG."""
    from gentool_gan.cyclegan_sample import Translator
    from gentool_gan.upscale import png_bytes

    o = options or TranslateToolOptions()
    tr = _worker("translate", "cyclegan", o.checkpoint,
                 lambda path: Translator(path, direction=o.direction, native=o.native, device="auto"),
                 o.direction, o.native)

    def work(data: bytes) -> tuple[dict[str, Any], bytes]:
        _, y, alpha, info = tr(data)
        return {**info, "from": tr.source, "to": tr.target}, png_bytes(y, alpha)

    return _answer(files, work)


TOOLS = [
    gentool.Tool("upscale", "super-resolution with an srgan model (any size, tiled)", run=run_upscale,
                 options=UpscaleToolOptions, model="srgan"),
    gentool.Tool("translate", "unpaired image-to-image translation with a cyclegan model", run=run_translate,
                 options=TranslateToolOptions, model="cyclegan"),
]
