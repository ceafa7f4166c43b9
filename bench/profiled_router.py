"""Run a command line (the router's server) with cProfile switched by signals, for
``calls.py``: SIGUSR1 starts collecting, SIGUSR2 stops and writes the stats to the file
named first.

    python bench/profiled_router.py OUT.pstats .venv/bin/uvicorn router_admin.asgi:application ...
"""

from __future__ import annotations

import cProfile
import os
import runpy
import signal
import sys
import time
from pathlib import Path


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    profiler = cProfile.Profile()

    # Python runs signal handlers in the main thread, which runs the event loop: the
    # profiler watches that thread only, which is where the router's requests run.
    def start(signum: int, frame: object) -> None:
        profiler.enable()

    def stop(signum: int, frame: object) -> None:
        profiler.disable()
        profiler.dump_stats(out + ".part")
        os.replace(out + ".part", out)  # the bench waits for the whole file
        profiler.clear()

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")


def stats_written(out: Path, timeout: float = 60) -> None:
    """Wait for the statistics a stop (SIGUSR2) writes to ``out``, which the caller removed
    before asking: the file appears whole, under its final name."""
    deadline = time.monotonic() + timeout
    while not out.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"the router wrote no profile to {out} within {timeout:.0f} s")
        time.sleep(0.1)


if __name__ == "__main__":
    main()
