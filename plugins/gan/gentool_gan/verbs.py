"""The GAN plugin's own command-line verbs: ``gentool upscale`` (srgan) and ``gentool translate``
(cyclegan). Torch-free at import: the command bodies import what they use."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional


def register(app: Any) -> None:
    """Add the plugin's verbs to gentool's Typer app (called from the commands hook)."""
    import typer

    @app.command("upscale")
    def upscale(
        images: List[str] = typer.Argument(..., help="Image files or folders (searched recursively)."),
        checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="srgan checkpoint: file, run, folder or hf://owner/repo (default: newest srgan run)."),
        out: Path = typer.Option(Path("upscaled"), "--out", "-o", help="Output folder."),
        stage: str = typer.Option("gan", "--stage", help="gan (adversarial stage: sharper) or pixel (SRResNet stage: higher PSNR)."),
        tile: int = typer.Option(128, "--tile", help="Tile side in input pixels (memory stays bounded; tiles overlap by the network's reach, so no seams)."),
        device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|mps."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per file on standard output."),
    ) -> None:
        """Up-scale images with an srgan model: any size and mode, tiled; one line per file.

        \b
        Exit codes: 0 every file written; 1 some file failed (the others are written);
        2 bad usage.
        """
        from gentool_gan.upscale import run

        raise typer.Exit(run(images, checkpoint=checkpoint, out=out, stage=stage, tile=tile, device=device,
                             as_json=as_json))

    @app.command("translate")
    def translate(
        images: List[str] = typer.Argument(..., help="Image files or folders (searched recursively)."),
        direction: str = typer.Option("a2b", "--direction", help="a2b (domain A to B) or b2a."),
        checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="cyclegan checkpoint: file, run, folder or hf://owner/repo (default: newest cyclegan run)."),
        out: Path = typer.Option(Path("translated"), "--out", "-o", help="Output folder (the images and sheet.png)."),
        native: bool = typer.Option(False, "--native", help="Translate at the image's own size (default: its shorter side scaled to the training size)."),
        device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|mps."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per file on standard output."),
    ) -> None:
        """Translate images to the other domain with a cyclegan model; one line per file, and a
        before/after sheet.

        \b
        Exit codes: 0 every file written; 1 some file failed (the others are written);
        2 bad usage.
        """
        from gentool_gan.cyclegan_sample import run_translate

        raise typer.Exit(run_translate(images, checkpoint=checkpoint, out=out, direction=direction, native=native,
                                       device=device, as_json=as_json))
