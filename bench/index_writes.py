"""What PostgreSQL does for each billed request: WAL bytes, the CPU of the backends that
run the request path's own statements, and their time (a hold reserved, then settled: the
hold, its usage record and its ledger charge), with the schema of this checkout and with the
schema migrated back to ``--baseline-migration``, in alternating rounds on one server.

    .venv/bin/python bench/index_writes.py [--baseline-migration billing:0027] [--requests 2000]

The same code runs both sides (the hot path's statements of this checkout, through
``billing.services.hot_path``): only the schema differs, e.g. the indexes a migration adds
or drops. One by one (concurrency 1: each statement alone, the latency a request sees) and
64 at a time (the statements batched, as under load). WAL bytes per request are what every
index written costs on disk and on replicas; the machine's noise does not move them.
The database (``--database-url``, its name must contain "bench") is dropped and made again.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from harness import prepare_database  # noqa: E402
from load import table  # noqa: E402
from proxy_bench import router_backend_pids  # noqa: E402
from scale_bench import setup_django  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/index_writes_bench"


def wal_lsn() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
        return int(cursor.fetchone()[0])


async def billed(count: int, concurrency: int, tag: str, who: dict[str, int | str]) -> None:
    """``count`` requests reserved and settled, ``concurrency`` at a time."""
    from billing.services import UsageReport
    from billing.services.hot_path import hold_reserve, hold_resolve

    expires = datetime.now(UTC) + timedelta(minutes=10)
    ids = iter(range(count))

    async def client() -> None:
        for n in ids:
            hold_id = f"req_{tag}_{n}"
            await hold_reserve(wallet_id=who["wallet"], hold_id=hold_id, amount_micros=1_000,
                               price_id=who["price"], model=who["model"],
                               api_key_id=who["key"], expires_at=expires)
            await hold_resolve(hold_id=hold_id, usage=UsageReport(
                prompt_tokens=100, completion_tokens=50), cost_micros=None)

    await asyncio.gather(*(client() for _ in range(concurrency)))


def cpu_ns(pids: list[int]) -> int:
    """Time on a CPU of ``pids`` so far, in nanoseconds (/proc/<pid>/schedstat: the tick
    counts of /proc/<pid>/stat are 10 ms, coarser than a run's whole database work)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def measure(count: int, concurrency: int, tag: str, who: dict[str, int | str], url: str
            ) -> tuple[float, float, float]:
    """(WAL bytes, microseconds, PostgreSQL backends' CPU microseconds) per request."""
    from billing.services.hot_path import close_pools

    async def run() -> tuple[float, int]:
        await billed(50, concurrency, f"{tag}w", who)  # the pool's connections, warm
        pids = await asyncio.to_thread(router_backend_pids, url)
        cpu_before = cpu_ns(pids)
        started = time.perf_counter()
        await billed(count, concurrency, tag, who)
        elapsed = time.perf_counter() - started
        cpu = cpu_ns(pids) - cpu_before
        await close_pools()
        return elapsed, cpu

    before = wal_lsn()
    elapsed, cpu = asyncio.run(run())
    return (wal_lsn() - before) / count, elapsed / count * 1e6, cpu / count / 1000


def migrate(target: str | None) -> None:
    from django.core.management import call_command

    if target is None:
        call_command("migrate", verbosity=0)
    else:
        app, name = target.split(":")
        call_command("migrate", app, name, verbosity=0)


def cast() -> dict[str, int | str]:
    from accounts.services import api_key_create, user_create
    from billing.models import LedgerEntry, Wallet
    from billing.services import price_set, wallet_credit

    user = user_create(email="index-writes@example.com")
    wallet_credit(user=user, amount_micros=10**15, idempotency_key="index-writes-seed",
                  memo="seed", kind=LedgerEntry.Kind.TOPUP)
    price = price_set(model="bench-model", input_usd_per_mtok="1", output_usd_per_mtok="2")
    key = api_key_create(user=user, name="bench").api_key
    return {"wallet": Wallet.objects.get(user=user).pk, "price": price.pk,
            "model": price.model, "key": key.pk}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-migration", default="billing:0027",
                        help="app:migration the baseline schema is migrated back to")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    options = parser.parse_args()
    prepare_database(options.database_url)
    setup_django(options.database_url)
    migrate(None)
    who = cast()
    sides = {"before": options.baseline_migration, "after": None}
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for round_number in range(options.rounds):
        order = ("before", "after") if round_number % 2 == 0 else ("after", "before")
        for side in order:
            migrate(sides[side])
            for concurrency in (1, 64):
                tag = f"{side}{round_number}c{concurrency}"
                figures = measure(options.requests, concurrency, tag, who,
                                  options.database_url)
                results.setdefault((side, concurrency), []).append(figures)
                print(f"round {round_number + 1} {side} c={concurrency}: "
                      f"{figures[0]:,.0f} WAL bytes, {figures[1]:,.0f} us, PostgreSQL "
                      f"{figures[2]:,.1f} us of CPU per request", flush=True)
    migrate(None)
    rows = []
    for concurrency in (1, 64):
        before = results[("before", concurrency)]
        after = results[("after", concurrency)]
        for label, index, unit in (("WAL bytes", 0, ""), ("time", 1, " us"),
                                   ("PostgreSQL CPU", 2, " us")):
            b = statistics.median(f[index] for f in before)
            a = statistics.median(f[index] for f in after)
            rows.append([f"{label} per request, c={concurrency}", f"{b:,.1f}{unit}",
                         f"{a:,.1f}{unit}", f"{a / b:.3f}"])
    print(f"\nschema at {options.baseline_migration} (before) and at this checkout's "
          f"(after), medians of {options.rounds} rounds of {options.requests:,} requests:")
    print(table(["", "before", "after", "after / before"], rows))


if __name__ == "__main__":
    main()
