"""Run a command line (the router's server) with every pass of Python's cycle collector
recorded, for ``stalls.py``: one JSON line per pass in the file named first, with when it
ended (``time.monotonic()``, the same clock in every process of the machine), its
generation, how long it took and how many objects it freed.

    python bench/gc_watch.py OUT.jsonl .venv/bin/uvicorn router_admin.asgi:application ...

A pass runs in whichever thread allocated last and holds the interpreter's lock meanwhile:
for a router process, every request in flight waits for it.
"""

from __future__ import annotations

import gc
import json
import runpy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def watch_passes(on_pass: Callable[[float, int, float, int], None]) -> None:
    """Call ``on_pass(ended_at, generation, milliseconds, objects_freed)`` after every pass
    of this process's cycle collector (``ended_at``: ``time.monotonic()``)."""
    started = [0.0]

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        on_pass(time.monotonic(), info["generation"], took * 1000, info["collected"])

    gc.callbacks.append(watch)


def read_passes(log: Path) -> list[dict[str, float]]:
    """The passes ``main`` wrote to ``log``: at, generation, ms, freed."""
    return [json.loads(line) for line in log.read_text().splitlines() if line]


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    log = open(out, "w", buffering=1)  # noqa: SIM115 - open for the process's whole life

    def write(at: float, generation: int, ms: float, freed: int) -> None:
        log.write(json.dumps({"at": at, "generation": generation, "ms": round(ms, 3),
                              "freed": freed}) + "\n")

    watch_passes(write)
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
