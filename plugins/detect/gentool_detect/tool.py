"""The ``detect`` tool (``gentool serve``'s ``POST /v1/tools/detect`` and its page panel): what
``gentool detect`` answers per file, for uploaded bytes, through the same scorer and heatmap code."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import gentool

from gentool_detect.configs import DetectToolOptions

def _scorer(checkpoint: str | None) -> Any:
    """The detector :func:`gentool_detect.command.pick_scorer` picks, loaded once per file version."""
    from gentool_detect.command import NO_DETECTOR, NoDetector, pick_scorer

    try:
        path = Path(gentool.resolve_checkpoint("detector", checkpoint))
    except gentool.GentoolError:
        if checkpoint is None:
            raise NoDetector(NO_DETECTOR) from None
        raise
    return gentool.keep_loaded(path, lambda p: pick_scorer(p, None, None), "detect")


def run(files: list[tuple[str, bytes]], options: DetectToolOptions) -> list[gentool.ToolAnswer]:
    """One answer per file: probability, verdict and detector; a heatmap PNG when asked; a
    file that is not a readable image gets its one-line error and the others are still scored."""
    from gentool_detect.imageio import ImageReadError, open_image

    options = options or DetectToolOptions()
    scorer = _scorer(options.checkpoint)
    answers = []
    for name, data in files:
        try:
            img = open_image(name, data=data)
            s = scorer.score(img)
        except ImageReadError as exc:
            answers.append(gentool.ToolAnswer(file=name, error=str(exc)))
            continue
        fields = {"probability": round(s.probability, 6),
                  "verdict": "generated" if s.probability >= options.threshold else "real",
                  "threshold": options.threshold, "detector": scorer.name, "tiles": s.tiles,
                  "calibrated": scorer.calibrated, "size": [img.width, img.height]}
        png = None
        if options.heatmap:
            from gentool_detect.explain import heatmap_image

            buf = io.BytesIO()
            heatmap_image(scorer, img).save(buf, format="PNG")
            png = buf.getvalue()
        answers.append(gentool.ToolAnswer(file=name, fields=fields, png=png))
    return answers
