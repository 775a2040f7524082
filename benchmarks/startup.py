"""Start-up time of the fast commands, beside `llm --help` measured in the same run.

    python benchmarks/startup.py [--runs 21]

Prints the median wall time (and min/max) of `gentool --help`, `gentool list` and
`gentool plugins` with every installed plugin loading, and of `llm --help` when the `llm`
command is installed (`pip install llm` to compare). The target is at most 0.19 s median.
CPU figures from whatever machine runs it; the header says which.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "gentool --help": [sys.executable, "-m", "gentool", "--help"],
    "gentool list": [sys.executable, "-m", "gentool", "list"],
    "gentool plugins": [sys.executable, "-m", "gentool", "plugins"],
}


def timed(cmd: list[str], runs: int) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k != "GENTOOL_PLUGINS"}
    subprocess.run(cmd, capture_output=True, env=env, check=True)  # warm the file cache
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env, check=True)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    cmds = dict(COMMANDS)
    gentool_exe = shutil.which("gentool")
    if gentool_exe:  # the console script as users run it
        cmds = {"gentool --help": [gentool_exe, "--help"], "gentool list": [gentool_exe, "list"],
                "gentool plugins": [gentool_exe, "plugins"]}
    llm = shutil.which("llm")
    if llm:
        cmds["llm --help (peer)"] = [llm, "--help"]
    print(f"machine: {platform.machine()} CPU, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"median of {args.runs} runs")
    from gentool.plugins import get_registry

    reg = get_registry()
    print(f"plugins loaded: {', '.join(sorted(reg.plugins)) or 'none'}")
    print(f"{'command':24s} {'median s':>9s} {'min s':>7s} {'max s':>7s}")
    for name, cmd in cmds.items():
        t = timed(cmd, args.runs)
        print(f"{name:24s} {statistics.median(t):9.3f} {min(t):7.3f} {max(t):7.3f}")
    if not llm:
        print("llm --help (peer): not installed here (pip install llm to measure it in the same run)")


if __name__ == "__main__":
    main()
