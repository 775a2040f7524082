"""Training progress for people: a rich bar on a terminal, plain lines otherwise, nothing off rank 0."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from gentool.api import TrainJob


class Reporter:
    """The progress of one training run: :meth:`update` after each step, :meth:`say` for a line."""

    def __init__(self, job: "TrainJob", total: int, start: int, enabled: bool):
        from rich.console import Console

        self.console = Console(stderr=False)
        self.enabled = enabled and not job.quiet
        self.live = self.enabled and self.console.is_terminal
        self.total, self.start = total, start
        self.label = f"{job.spec.name}/{job.run.name}"
        self.progress = None
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self.progress.start()
            self.bar = self.progress.add_task(self.label, total=total, completed=start, info="")

    def update(self, step: int, epoch: int, losses: Mapping[str, float], rate: float, eta: float, log_line: bool) -> None:
        if not self.enabled:
            return
        info = " ".join(f"{k} {v:.4g}" for k, v in losses.items()) + f"  {rate:,.0f} samples/s"
        if self.live:
            self.progress.update(self.bar, completed=step, info=info, description=f"{self.label} ep {epoch + 1}")
        elif log_line:
            self.console.print(f"{self.label} step {step}/{self.total} epoch {epoch + 1} {info} eta {eta:.0f}s",
                               highlight=False, soft_wrap=True, markup=False)

    def say(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False, soft_wrap=True, markup=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
