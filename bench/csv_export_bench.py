"""The usage CSV export of one heavy user: PostgreSQL's COPY against the Python rows.

    python bench/csv_export_bench.py [--records 200000 1000000] [--database-url .../csv_bench]

Drops and recreates a dedicated PostgreSQL database (its name must contain "bench"),
migrates it, and seeds one user's usage records with set-based SQL (generate_series:
every status and endpoint, NULL upstream costs and latencies, requests without a key, model
names with commas, quotes and formula prefixes), up to each ``--records`` in turn. At each
size it runs the portal's export view (portal.views.usage.usage_csv) both ways, the COPY
path and the Python rows it replaces (the view with its SQL columns taken away, as on
SQLite), and reads the streamed response the way the ASGI server does (an async iterator,
in the request's thread-sensitive context). It reports rows/s, and the growth of the
process's peak resident memory over each run (VmHWM, reset between runs through
/proc/self/clear_refs), checks that both paths wrote the same bytes, and shows the plan of
the export's query.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "router_admin.settings")
os.environ.setdefault("ALLOWED_HOSTS", "testserver")

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/csv_bench"
MODELS = ["gpt-small", "gpt-large", "claude, \"sonnet\"", "=cmd|' /C calc'!A0", "llama-70b"]

SEED_USAGE = """
INSERT INTO billing_usagerecord (request_id, user_id, api_key_id, model, worker,
    prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, endpoint,
    cost_micros, upstream_cost_micros, price_id, source, estimate_reason, over_cap,
    over_hold, status, latency_ms, ttft_ms, created_at)
SELECT 'csv-' || g, %(user)s, CASE WHEN g %% 10 = 0 THEN NULL ELSE %(key)s END,
       (%(models)s::text[])[1 + g %% 5], 'w-bench', p, c, p / 4, p / 8,
       (ARRAY['chat', 'responses', 'messages', 'embeddings', 'completions'])[1 + g %% 5],
       p + 2 * c, CASE WHEN g %% 6 = 0 THEN NULL ELSE (p + 2 * c) * 7 / 10 END, %(price)s,
       CASE WHEN g %% 13 = 0 THEN 'estimated' ELSE 'provider' END, '', false, false,
       (ARRAY['ok', 'ok', 'ok', 'cancelled', 'upstream_error', 'expired'])[1 + g %% 6],
       CASE WHEN g %% 17 = 0 THEN NULL ELSE (200 + (g * 2654435761) %% 4000)::int END,
       (50 + (g * 40503) %% 900)::int,
       %(now)s - g * interval '1 second' - (g %% 1000) * interval '1 microsecond'
FROM (SELECT g, (100 + (g * 37) %% 3000)::int AS p, (10 + (g * 101) %% 800)::int AS c
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g) AS s
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--out", type=Path,
                        default=Path(tempfile.gettempdir()) / "csv_export_bench.json")
    parser.add_argument("--skip-python", action="store_true",
                        help="time the COPY path only (the Python one takes ~45 s per 1M)")
    options = parser.parse_args()
    from bench.harness import prepare_database

    prepare_database(options.database_url)
    os.environ["DATABASE_URL"] = options.database_url
    import django

    django.setup()
    from django.core.management import call_command

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    print(f"migrate: {time.perf_counter() - started:.1f} s", flush=True)
    user, key, price = _fixtures()
    results: list[dict[str, Any]] = []
    seeded = 0
    for total in sorted(options.records):
        _seed(user=user, key=key, price=price, lo=seeded + 1, hi=total)
        seeded = total
        print(f"\n{total:,} records: {_plan(user)}", flush=True)
        runs = {"copy": _run(user, copy=True)}
        if not options.skip_python:
            runs["python"] = _run(user, copy=False)
        for name, run in runs.items():
            print(f"  {name:6} {run['rows']:>9,} rows {run['seconds']:7.2f} s "
                  f"{run['rows_per_s']:>10,.0f} rows/s  peak RSS +{run['peak_rss_mb']:.1f} MB "
                  f"({run['bytes'] / 1e6:.0f} MB of CSV)", flush=True)
        if "python" in runs:
            same = runs["copy"]["sha256"] == runs["python"]["sha256"]
            print(f"  identical bytes: {same}; speed-up "
                  f"{runs['copy']['rows_per_s'] / runs['python']['rows_per_s']:.1f}x",
                  flush=True)
            if not same:
                raise SystemExit("the two exports differ")
        results.append({"records": total, **runs})
    options.out.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {options.out}")


def _fixtures() -> tuple[Any, Any, Any]:
    from accounts.services import api_key_create, user_create
    from billing.services import price_set

    user = user_create(email="heavy@bench.example")
    key = api_key_create(user=user, name="+ci, \"nightly\"").api_key
    price = price_set(model=MODELS[0], input_usd_per_mtok="1", output_usd_per_mtok="2",
                      max_output_tokens=4000)
    return user, key, price


def _seed(*, user: Any, key: Any, price: Any, lo: int, hi: int) -> None:
    from django.db import connection
    from django.utils import timezone

    started = time.perf_counter()
    now = timezone.now()
    chunk = 1_000_000
    with connection.cursor() as cursor:
        for start in range(lo, hi + 1, chunk):
            cursor.execute(SEED_USAGE, {"user": user.pk, "key": key.pk, "models": MODELS,
                                        "price": price.pk, "now": now, "lo": start,
                                        "hi": min(start + chunk - 1, hi)})
        cursor.execute("VACUUM ANALYZE billing_usagerecord")
    print(f"seed {lo:,}..{hi:,}: {time.perf_counter() - started:.1f} s", flush=True)


def _plan(user: Any) -> str:
    """What the export's query reads: the plan's top node, whether it sorts, the indexes."""
    import re

    from django.db import connection

    from billing.selectors import usage_records_of
    from portal.csv_copy import copy_sql
    from portal.views.usage import CSV_SQL_ROW

    statement = copy_sql(usage_records_of(user=user), CSV_SQL_ROW)
    assert statement is not None
    select = statement.removeprefix("COPY (").rsplit(") TO STDOUT", 1)[0]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {select}")
        lines = [row[0] for row in cursor.fetchall()]
    top = lines[0].split("  (")[0].strip()
    sorts = any(re.match(r"\s*(->\s*)?(Incremental )?Sort\s+\(", line) for line in lines)
    indexes = sorted({m[1] for line in lines if (m := re.search(r"Index (?:Only )?Scan "
                                                                 r"(?:Backward )?using (\S+)",
                                                                 line))})
    return (f"plan {top}, {'a sort' if sorts else 'no sort'}, "
            f"indexes {', '.join(indexes) or 'none'}")


def _peak_rss() -> tuple[int, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def _run(user: Any, *, copy: bool) -> dict[str, Any]:
    from asgiref.sync import ThreadSensitiveContext, sync_to_async
    from django.test import RequestFactory

    from portal.views import usage as usage_views

    request = RequestFactory().get("/usage.csv")
    request.user = user

    async def export() -> tuple[int, int, str]:
        digest, size, rows = hashlib.sha256(), 0, 0
        async with ThreadSensitiveContext():  # as ASGIHandler serves a request
            response = await sync_to_async(usage_views.usage_csv)(request)
            async for part in response:
                digest.update(part)
                size += len(part)
                rows += part.count(b"\r\n")
            await sync_to_async(response.close)()
        return rows - 1, size, digest.hexdigest()

    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    rss_before, _ = _peak_rss()
    started = time.perf_counter()
    # The Python rows: the view without its SQL columns, the path SQLite takes.
    with mock.patch.object(usage_views, "CSV_SQL_ROW", usage_views.CSV_SQL_ROW if copy
                           else None):
        rows, size, digest = asyncio.run(export())
    seconds = time.perf_counter() - started
    _, peak = _peak_rss()
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": rows / seconds,
            "bytes": size, "peak_rss_mb": round((peak - rss_before) / 2**20, 1),
            "sha256": digest}


if __name__ == "__main__":
    main()
