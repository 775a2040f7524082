"""A graceful stop of training on Ctrl-C (SIGINT) or SIGTERM."""

from __future__ import annotations

from typing import Any, Callable


class GracefulStop:
    """First Ctrl-C (SIGINT) or SIGTERM: finish the current step, save, stop. A second one: stop at
    once, unsaved. SIGTERM is what schedulers (SLURM, Kubernetes, systemd) send before they kill a
    job, so it gets the same care as Ctrl-C. ``say`` tells the user that the stop was heard."""

    def __init__(self, say: Callable[[str], None]):
        import signal
        import threading

        self.requested = False
        self.hard = False
        self.signal: int | None = None
        self.previous: dict[int, Any] = {}
        self.say = say
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
                if sig is not None:
                    self.previous[sig] = signal.signal(sig, self._handle)

    @property
    def name(self) -> str:
        import signal

        return "SIGTERM" if self.signal == getattr(signal, "SIGTERM", None) else "Ctrl-C"

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            self.hard = True
            raise KeyboardInterrupt
        self.requested, self.signal = True, signum
        self.say(f"{self.name}: stopping after this step (send it again to stop at once, without saving)")

    def restore(self) -> None:
        import signal

        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
        self.previous = {}
