"""What the benchmark scripts share: the real command line in a subprocess, and the one line that
says which machine gave a figure. (Scripts run as ``python benchmarks/NAME.py``, so this folder
is on ``sys.path`` and ``from common import ...`` works.)"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

#: The project's shared data sets (see ../shared/data/README.md), beside the repository, or where
#: ``GENTOOL_SHARED_DATA`` points (a machine where they lie elsewhere).
SHARED = Path(os.environ.get("GENTOOL_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def gentool(args: list[str], env: dict[str, str]) -> str:
    """``gentool ARGS`` in a fresh interpreter; its standard output, or exit with its error."""
    proc = subprocess.run([sys.executable, "-m", "gentool", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"gentool {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine(device: str = "cpu") -> str:
    """CPU, cores, torch and its threads, the device (and GPU name), and the load average now."""
    import torch

    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else "no GPU used"
    load = os.getloadavg()
    return (f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} torch "
            f"thread(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, device {device} ({gpu}); "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
