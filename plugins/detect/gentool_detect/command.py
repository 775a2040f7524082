"""``gentool detect FILE_OR_DIR...``: the probability that each image is generated.

Exit codes: 0 every file was answered; 4 some files could not be read (each has its own error
line; the others were answered); 1 no usable detector (or another setup error, one line);
2 a usage error (an unknown flag, say).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

import gentool

EXIT_OK, EXIT_SETUP, EXIT_USAGE, EXIT_UNREADABLE = 0, 1, 2, 4
NO_DETECTOR = ("no detector to use: train one (gentool train detector --data DIR_WITH_real_AND_fake, or --data "
               "REAL --set fake_from=GENERATOR_CKPT), pull one (gentool pull OWNER/NAME, then --checkpoint "
               "hf://OWNER/NAME), or give a Hugging Face image classifier with --model HF_ID_OR_PATH")


class NoDetector(gentool.GentoolError):
    """No detector trained, given or found."""


def pick_scorer(checkpoint: str | None, model: str | None, discriminator: str | None):
    """The one detector the flags name (or the newest trained ``detector`` run)."""
    named = (("--checkpoint", checkpoint), ("--model", model), ("--discriminator", discriminator))
    for flag, value in named:
        if value is not None and not value.strip():  # not the default detector in disguise
            raise gentool.ConfigError(f"{flag} is empty: name a detector, or leave the flag out for the newest "
                                      "detector run")
    given = [f for f, v in named if v is not None]
    if len(given) > 1:
        raise gentool.ConfigError(f"give one detector, not {' and '.join(given)}")
    if model is not None:
        from gentool_detect.scorers import HFScorer

        return HFScorer(model)
    if discriminator is not None:
        from gentool_detect.scorers import DiscriminatorScorer

        return DiscriminatorScorer(discriminator)
    from gentool_detect.scorers import CheckpointScorer

    try:
        path = gentool.resolve_checkpoint("detector", checkpoint)
    except gentool.GentoolError:
        if checkpoint is None:
            raise NoDetector(NO_DETECTOR) from None
        raise
    return CheckpointScorer(Path(path))


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``STEM_2.SUFFIX``, ``STEM_3.SUFFIX``... when an earlier file of this call had it,
    so that no heatmap overwrites another (as ``gentool upscale`` and ``translate`` name results)."""
    stem, dot, suffix = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    out, k = name, 1
    while out in used:
        k += 1
        out = f"{stem}_{k}{dot}{suffix}"
    used.add(out)
    return out


def run_detect(files: list[str], checkpoint: str | None, as_json: bool, threshold: float, explain: str | None,
               discriminator: str | None, model: str | None) -> int:
    """Score ``files``; print one line (or JSON object) per file; return the exit code."""
    from gentool_detect.imageio import ImageReadError, collect, open_image

    if not 0 <= threshold <= 1:
        raise gentool.ConfigError(f"--threshold must lie in [0, 1], got {threshold}")
    paths = collect(files)
    if not paths:
        raise gentool.DataError(f"no image files in {', '.join(files)}")
    scorer = pick_scorer(checkpoint, model, discriminator)
    failed = 0
    heatmaps: set[str] = set()  # two files of one name from different folders get two heatmaps
    for path in paths:
        try:
            img = open_image(path)
            s = scorer.score(img)
        except ImageReadError as exc:
            failed += 1
            if as_json:
                typer.echo(json.dumps({"file": str(path), "error": str(exc)}))
            else:
                typer.echo(f"error: {exc}", err=True)
            continue
        verdict = "generated" if s.probability >= threshold else "real"
        heat = None
        if explain:
            from gentool_detect.explain import write

            heat = write(scorer, img, Path(explain), unique_name(path.name, heatmaps))
        if as_json:
            doc = {"file": str(path), "probability": round(s.probability, 6), "verdict": verdict,
                   "threshold": threshold, "detector": scorer.name, "tiles": s.tiles,
                   "aggregation": scorer.aggregation, "calibrated": scorer.calibrated,
                   "size": [img.width, img.height]}
            if s.max_tile is not None:
                doc["max_tile_probability"] = round(s.max_tile, 6)
            if heat is not None:
                doc["heatmap"] = str(heat)
            typer.echo(json.dumps(doc))
        else:
            tiles = f", {s.tiles} tiles" if s.tiles > 1 else ""
            typer.echo(f"{path}  {s.probability:.3f}  {verdict}  ({scorer.name}{tiles})")
    return EXIT_UNREADABLE if failed else EXIT_OK


def register(app: typer.Typer) -> None:
    """Add the ``detect`` verb to ``app``."""

    @app.command("detect")
    def detect(
        files: List[str] = typer.Argument(..., help="Image files or folders (recursed)."),
        checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c",
                                                 help="Detector checkpoint, run, or hf://OWNER/NAME (default: the newest detector run)."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per file."),
        threshold: float = typer.Option(0.5, "--threshold", help="Probability from which the verdict is 'generated'."),
        explain: Optional[str] = typer.Option(None, "--explain", help="Write a Grad-CAM heatmap overlay per image here."),
        discriminator: Optional[str] = typer.Option(None, "--discriminator", help="Score with a GAN checkpoint's discriminator."),
        model: Optional[str] = typer.Option(None, "--model", help="A Hugging Face image-classification model (id or folder)."),
    ) -> None:
        """Probability that each image is generated, a verdict, and the detector used.

        Exit codes: 0 all files answered; 4 some files unreadable (one error line each, the
        others answered); 1 no usable detector; 2 usage error.
        """
        try:
            code = run_detect(files, checkpoint, as_json, threshold, explain, discriminator, model)
        except BrokenPipeError:  # `gentool detect DIR | head`: the reader has had enough
            import os
            import sys

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            code = EXIT_OK
        raise typer.Exit(code)
