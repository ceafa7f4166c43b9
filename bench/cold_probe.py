"""What a pause costs any Python work on this machine: the CPU of one fixed piece of work,
run again and again with a pause of each length before it.

    .venv/bin/python bench/cold_probe.py [--cpu 0] [--rounds 2]

A request's work is the same whether the one before it ended a millisecond or ten seconds
ago, yet on the shared machine these benchmarks run on, the router spent two to three times
the CPU on a request that came after a pause (``idle_ttft.py`` prints it): the same
instructions, no page fault or context switch more, only slower. This measures the machine
alone. The work (about 0.4 ms: walking a few thousand small dicts and lists, and parsing a
little JSON, as a request walks its code and data) runs in this process, pinned to one
CPU, with nothing else of the project running; its CPU is the thread's own
(``time.thread_time_ns``), so time the process spent waiting is not in it.

Seen here: 0.38 ms back to back, 0.45-0.6 ms after a 2 ms pause, 0.65-1.06 ms after 20 ms
and more, with a busy loop keeping that CPU from ever halting (``SCHED_IDLE``) or without.
What the work touched is no longer in the CPU's caches when it runs again: other processes
and, under the hypervisor, other machines ran on that core meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

GAPS_S = (0.0, 0.002, 0.02, 0.1, 0.5, 2.0)


class Workload:
    """The same work every run: about 0.4 ms on a warm core here."""

    def __init__(self) -> None:
        pick = random.Random(1)  # noqa: S311 - the same data every run, not a secret
        self._items = [{f"k{j}": [pick.random() for _ in range(4)] for j in range(8)}
                       for _ in range(4000)]
        self._text = json.dumps(self._items[:30])
        for _ in range(50):
            self.run()

    def run(self) -> float:
        total = 0.0
        for item in self._items[::16]:
            for values in item.values():
                total += values[0]
        json.loads(self._text)
        return total

    def cpu_us(self) -> float:
        """The CPU of one run, in microseconds."""
        start = time.thread_time_ns()
        self.run()
        return (time.thread_time_ns() - start) / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", type=int, default=0, help="the CPU to run on (default 0, "
                        "where the benchmarks pin the router)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over every pause")
    options = parser.parse_args(argv)
    os.sched_setaffinity(0, {options.cpu})
    work = Workload()
    print(f"one fixed piece of Python work on CPU {options.cpu}, its CPU after each pause:")
    for round_ in range(options.rounds):
        for gap in GAPS_S:
            runs = []
            for _ in range(30 if gap <= 0.1 else 10):
                if gap:
                    time.sleep(gap)
                runs.append(work.cpu_us())
            print(f"  round {round_ + 1}, pause {1000 * gap:6g} ms: "
                  f"p50 {statistics.median(runs):6.0f} us, max {max(runs):6.0f} us", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
