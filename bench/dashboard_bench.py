"""The admin dashboard over 10 million usage records: seed, roll up, time the page.

    python bench/dashboard_bench.py [--records 10000000] [--database-url postgres://.../dash_bench]

Drops and recreates a dedicated PostgreSQL database (its name must contain "bench"),
migrates it, seeds users, wallets, credits and a few pending holds through the services,
and the usage records with set-based SQL (generate_series: 1,000 users, one of them making
20 % of the requests, 6 workers, 5 models, 90 days). The roll-ups: the history with the
same GROUP BY the jobs run, in SQL (billing's job builds its rows in Python, minutes for 90
days of 10M records), then the real jobs over the last two days; then the admin's index,
through the test client as a signed-in staff member, warm then timed N times per period.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "router_admin.settings")
os.environ.setdefault("ALLOWED_HOSTS", "testserver")  # the test client's host

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/dash16_bench"
WORKERS = ["w-openai-1", "w-openai-2", "w-vllm-1", "w-vllm-2", "w-anthropic", "w-slow"]
MODELS = ["gpt-small", "gpt-large", "claude", "llama-70b", "embed"]
DAYS = 90

SEED_USAGE = """
INSERT INTO billing_usagerecord (request_id, user_id, model, worker, prompt_tokens,
    completion_tokens, cached_tokens, cache_write_tokens, endpoint, cost_micros,
    upstream_cost_micros, price_id, source, estimate_reason, over_cap, over_hold, status,
    latency_ms, ttft_ms, created_at)
SELECT 'b' || g, CASE WHEN g %% 5 = 0 THEN %(hot)s
                      ELSE (%(users)s::bigint[])[1 + (g * 7919) %% 999] END,
       (%(models)s::text[])[1 + g %% 5], (%(workers)s::text[])[1 + (g / 7) %% 6],
       p, c, 0, 0, 'chat', p + 2 * c,
       CASE WHEN (g / 7) %% 6 = 5 THEN NULL ELSE (p + 2 * c) * 7 / 10 END,
       %(price)s, 'provider', '', false, false,
       CASE WHEN g %% 50 = 0 THEN 'upstream_error' WHEN g %% 97 = 0 THEN 'cancelled'
            ELSE 'ok' END,
       (200 + (g * 2654435761) %% 4000)::int, (50 + (g * 40503) %% 900)::int,
       %(now)s - (g::float8 / %(total)s) * interval '%(days)s days'
FROM (SELECT g, (100 + (g * 37) %% 3000)::int AS p, (10 + (g * 101) %% 800)::int AS c
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g) AS s
"""

# What billing.services.rollups.usage_rollup writes, as one statement per period.
ROLLUP_USAGE = """
INSERT INTO billing_usagerollup (period, bucket_start, user_id, api_key_id, model, requests,
    failed_requests, prompt_tokens, completion_tokens, cached_tokens, cost_micros,
    upstream_cost_micros, unknown_cost_requests, unknown_cost_charged_micros)
SELECT %(period)s, date_trunc(%(period)s, created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       user_id, api_key_id, model, count(*), count(*) FILTER (WHERE status <> 'ok'),
       sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), sum(cost_micros),
       coalesce(sum(upstream_cost_micros), 0),
       count(*) FILTER (WHERE upstream_cost_micros IS NULL),
       coalesce(sum(cost_micros) FILTER (WHERE upstream_cost_micros IS NULL), 0)
FROM billing_usagerecord WHERE created_at < %(until)s GROUP BY 2, 3, 4, 5
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--runs", type=int, default=20)
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
    seed(options.records)
    rollups()
    measure(options.runs)


def _timed(label: str):
    class Timer:
        def __enter__(self) -> None:
            self.started = time.perf_counter()

        def __exit__(self, *exc: object) -> None:
            print(f"{label}: {time.perf_counter() - self.started:.1f} s", flush=True)

    return Timer()


def seed(total: int) -> None:
    from django.db import connection
    from django.utils import timezone

    from accounts.models import User
    from billing.models import LedgerEntry
    from billing.services import price_set
    from billing.services.holds import hold_create
    from billing.services.wallets import wallet_credit

    with _timed("users, wallets and credits (1,000)"):
        users = User.objects.bulk_create(User(email=f"dash{i}@example.com", password="!")
                                         for i in range(1000))
        for i, user in enumerate(users):
            kind = (LedgerEntry.Kind.TOPUP, LedgerEntry.Kind.VOUCHER,
                    LedgerEntry.Kind.ADJUSTMENT)[i % 3]
            wallet_credit(user=user, amount_micros=(i % 50 + 1) * 200_000, kind=kind,
                          idempotency_key=f"seed-{i}", memo="bench seed")
        price = None
        for model in MODELS:
            price = price_set(model=model, input_usd_per_mtok="1", output_usd_per_mtok="2",
                              max_output_tokens=4000)
        for i in range(50):
            hold_create(user=users[i], hold_id=f"bench-hold-{i}", amount_micros=1000,
                        price=price, model=MODELS[0])
    now = timezone.now()
    ids = [u.pk for u in users]
    chunk = 1_000_000
    with _timed(f"usage records ({total:,}, generate_series in chunks of {chunk:,})"):
        for lo in range(1, total + 1, chunk):
            with connection.cursor() as cursor:
                cursor.execute(SEED_USAGE, {
                    "hot": ids[0], "users": ids[1:], "models": MODELS, "workers": WORKERS,
                    "price": price.pk, "now": now, "total": total, "days": DAYS, "lo": lo,
                    "hi": min(lo + chunk - 1, total)})
            print(f"  {min(lo + chunk - 1, total):,}", flush=True)
    with _timed("VACUUM ANALYZE"), connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def rollups() -> None:
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from billing.services.rollups import usage_rollup
    from proxy.rollup_service import bucket_floor, worker_rollup

    now = timezone.now()
    recent = bucket_floor(now - timedelta(days=2), "day")
    with _timed("usage roll-ups of the history (SQL, the job's GROUP BY)"):
        for period in ("hour", "day"):
            with connection.cursor() as cursor:
                cursor.execute(ROLLUP_USAGE, {"period": period, "until": recent})
    with _timed("usage roll-up job, last two days (billing.services.rollups)"):
        usage_rollup(since=recent, until=now)
    with _timed("worker roll-up job, 90 days (proxy.rollup_service, day by day)"):
        day = bucket_floor(now - timedelta(days=DAYS + 1), "day")
        while day <= now:
            worker_rollup(since=day, until=min(day + timedelta(days=1), now)
                          - timedelta(microseconds=1))
            day += timedelta(days=1)
    with _timed("ANALYZE"), connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def measure(runs: int) -> None:
    from django.conf import settings
    from django.test import Client, override_settings

    # No collectstatic here: plain static names, as the tests use (tests/conftest.py).
    plain = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    with override_settings(STORAGES={**settings.STORAGES, "staticfiles": plain}):
        _measure(runs, Client)


def _measure(runs: int, Client: type) -> None:

    from accounts.services import user_create
    from tests.staff import staff_sign_in

    client = staff_sign_in(Client(), user_create(email="staff@example.com", is_staff=True,
                                                 is_superuser=True))
    print(f"\nGET /admin/?period=... ({runs} timed renders after 2 warm-up ones)")
    print(f"{'period':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for period in ("24h", "7d", "30d"):
        for _ in range(2):
            assert client.get(f"/admin/?period={period}").status_code == 200
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            response = client.get(f"/admin/?period={period}")
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        times.sort()
        p95 = times[max(0, round(0.95 * len(times)) - 1)]
        print(f"{period:>6} {statistics.median(times):8.1f} {p95:8.1f} {times[-1]:8.1f}",
              flush=True)


if __name__ == "__main__":
    main()
