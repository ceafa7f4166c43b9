"""The admin dashboard over 10 million usage records: seed, roll up, time the page.

    python bench/dashboard_bench.py [--records 10000000] [--database-url postgres://.../dash_bench]

Drops and recreates a dedicated PostgreSQL database (its name must contain "bench"),
migrates it, and seeds the history ``scale_seed.py`` shares with ``scale_bench.py``: 1,000
users (one of them making 20 % of the requests), organizations, keys and budgets, and the
usage records with their holds, charges and running balances by set-based SQL
(generate_series: 6 workers, 5 models, 90 days), the usage roll-ups by the job's GROUP BY in
SQL; then 50 pending holds through the service, the real roll-up jobs over the last days
and the fleet roll-ups; then the admin's index, through the test client as a signed-in
staff member, warm then timed N times per period.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # scale_seed, by its plain name
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "router_admin.settings")
os.environ.setdefault("ALLOWED_HOSTS", "testserver")  # the test client's host

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/dash16_bench"


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


def seed(total: int) -> None:
    """The shared history of ``scale_seed.py`` (usage records with their holds, charges and
    usage roll-ups), and 50 pending holds through the service for the money panels."""
    from scale_seed import MODELS
    from scale_seed import seed as seed_history

    from billing.models import ModelPrice, Wallet
    from billing.services.holds import hold_create

    seed_history(total)
    price = ModelPrice.objects.get(model=MODELS[0])
    for i, wallet in enumerate(Wallet.objects.filter(user__isnull=False).order_by("pk")[:50]):
        hold_create(wallet=wallet, hold_id=f"bench-hold-{i}", amount_micros=1000,
                    price=price, model=MODELS[0])


def rollups() -> None:
    """The roll-up jobs themselves over the last days (the seed built the history in SQL),
    and the fleet roll-ups (``proxy.rollup_service``) day by day."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone
    from scale_seed import DAYS, timed

    from billing.services.rollups import usage_rollup
    from proxy.rollup_service import bucket_floor, worker_rollup

    now = timezone.now()
    recent = bucket_floor(now - timedelta(days=2), "day")
    with timed("usage roll-up job, last two days (billing.services.rollups)", print):
        usage_rollup(since=recent, until=now)
    with timed("worker roll-up job, 90 days (proxy.rollup_service, day by day)", print):
        day = bucket_floor(now - timedelta(days=DAYS + 1), "day")
        while day <= now:
            worker_rollup(since=day, until=min(day + timedelta(days=1), now)
                          - timedelta(microseconds=1))
            day += timedelta(days=1)
    with timed("ANALYZE", print), connection.cursor() as cursor:
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
