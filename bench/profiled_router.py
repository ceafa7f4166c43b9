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


if __name__ == "__main__":
    main()
